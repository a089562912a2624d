"""Report -> the document PRTG reads, through one Jinja template per format (templates/)."""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache
from typing import Optional

import jinja2

from .report import Report, clean_text
from .settings import OutputFormat

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_FILES = {
    OutputFormat.PRTG_XML: "prtg.xml.j2",
    OutputFormat.PRTG_JSON: "prtg.json.j2",
    OutputFormat.SCRIPT_V2: "script_v2.json.j2",
    OutputFormat.TEXT: "text.txt.j2",
    OutputFormat.NAGIOS: "nagios.txt.j2",
    OutputFormat.OPENMETRICS: "openmetrics.txt.j2",
}


class _PrivateCache(jinja2.BytecodeCache):
    """Compiled templates kept in the sensor's private state folder (state.py), so a run loads
    the template's code instead of parsing and compiling it (about 5 ms of CPU a run). Jinja
    keys each entry by template and checks the source's checksum and the Python version."""

    def __init__(self, folder: str):
        self.folder = folder

    def _path(self, bucket: jinja2.bccache.Bucket) -> str:
        return os.path.join(self.folder, f"template-{bucket.key}.cache")

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        from .errors import RoundTripError
        from .state import read_private

        try:
            data = read_private(self._path(bucket))
        except (OSError, RoundTripError):  # unreadable or unsafe: compile as without a cache
            return
        if data:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        from .errors import RoundTripError
        from .state import write_private

        try:
            write_private(self._path(bucket), bucket.bytecode_to_string())
        except (OSError, RoundTripError):
            pass


@lru_cache(maxsize=2)
def _environment(cache_folder: Optional[str] = None) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),  # from a folder or a zip archive (.pyz)
        bytecode_cache=_PrivateCache(cache_folder) if cache_folder else None,
        autoescape=jinja2.select_autoescape(enabled_extensions=("xml.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(report: Report, fmt: OutputFormat, cache_folder: Optional[str] = None, colour: bool = False) -> str:
    """The document; `cache_folder`, the private state folder, keeps compiled templates."""
    # The text is the one free-form part: cleaned once more here, so that no character XML
    # forbids (or a lone surrogate) reaches any document, whoever built the report.
    report = replace(report, text=clean_text(report.text))
    from .monitors import view  # what the other monitors' and people's formats need besides the report

    return _environment(cache_folder).get_template(_FILES[fmt]).render(report=report, **view(report, fmt, colour))

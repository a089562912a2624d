"""Report -> the document PRTG reads, through one Jinja template per format (templates/)."""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache

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


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("xml.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(report: Report, fmt: OutputFormat, colour: bool = False) -> str:
    # The text is the one free-form part: cleaned once more here, so that no character XML
    # forbids (or a lone surrogate) reaches any document, whoever built the report.
    report = replace(report, text=clean_text(report.text))
    from .monitors import view  # what the other monitors' and people's formats need besides the report

    return _environment().get_template(_FILES[fmt]).render(report=report, **view(report, fmt, colour))

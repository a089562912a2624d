"""The last look before a document goes out: does it parse as the format PRTG expects?

A template or escaping bug must not turn into PRTG's generic "returned XML/JSON does not match
the expected structure" (PE231/PE233): a rendered document that does not parse (defusedxml for
XML, json for JSON), or parses into the wrong shape, is replaced by a minimal error document
built without the templates, naming the problem. defusedxml is imported only for XML.
"""

from __future__ import annotations

import json
from typing import Optional

from .report import clean_text
from .settings import OutputFormat


def problem(document: str, fmt: OutputFormat) -> Optional[str]:
    """Why `document` is not a document of `fmt` (None when it is, and for the text format)."""
    if fmt is OutputFormat.PRTG_XML:
        from defusedxml import ElementTree

        try:
            root = ElementTree.fromstring(document.encode("utf-8", "surrogatepass"))
        except Exception as exc:  # noqa: BLE001 - any parse failure (or refused entity) is the finding
            return f"XML does not parse: {exc}"
        return None if root.tag == "prtg" else f"the root element is <{root.tag}>, not <prtg>"
    if fmt in (OutputFormat.PRTG_JSON, OutputFormat.SCRIPT_V2):
        try:
            data = json.loads(document)
        except (ValueError, RecursionError) as exc:
            return f"JSON does not parse: {exc}"
        if fmt is OutputFormat.PRTG_JSON:
            ok = isinstance(data, dict) and list(data) == ["prtg"] and isinstance(data["prtg"], dict)
            return None if ok else 'not one object {"prtg": {...}}'
        ok = isinstance(data, dict) and data.get("version") == 2 and isinstance(data.get("status"), str)
        return None if ok else 'not an object with "version": 2 and a status'
    return None


def minimal_error(text: str, fmt: OutputFormat) -> str:
    """An error document of `fmt` with `text`, built without templates."""
    text = clean_text(text)
    if fmt is OutputFormat.PRTG_XML:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<prtg>\n  <error>1</error>\n'
                f"  <text>{escaped}</text>\n</prtg>\n")
    if fmt is OutputFormat.PRTG_JSON:
        return json.dumps({"prtg": {"error": 1, "text": text}}) + "\n"
    if fmt is OutputFormat.SCRIPT_V2:
        return json.dumps({"version": 2, "status": "error", "message": text}) + "\n"
    if fmt is OutputFormat.NAGIOS:
        return f"ROUNDTRIP UNKNOWN - {text.replace('|', '/')}\n"
    if fmt is OutputFormat.OPENMETRICS:
        return ("# HELP roundtrip_success 1 when the last mail round trip succeeded, 0 when it failed.\n"
                "# TYPE roundtrip_success gauge\nroundtrip_success 0\n# EOF\n")
    return f"ERROR  {text}\n"


_BUG = "This is a bug in the sensor: run it by hand with --format text --verbose and report the output."


def checked(document: str, fmt: OutputFormat) -> str:
    """`document` if it is sound, else a minimal error document that says what was wrong."""
    found = problem(document, fmt)
    if found is None:
        return document
    return minimal_error(
        f"Sensor: the {fmt.value} document of this run was malformed and was not sent ({found}). {_BUG}", fmt
    )


def failed_render(exc: Exception, fmt: OutputFormat) -> str:
    """The error document for a template that could not be rendered at all."""
    return minimal_error(f"Sensor: the {fmt.value} document of this run could not be rendered "
                         f"({type(exc).__name__}: {exc}). {_BUG}", fmt)

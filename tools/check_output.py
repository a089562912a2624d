#!/usr/bin/env python3
"""Will PRTG accept this document? Reads one sensor output (a file or stdin) and says why not.

    python3 tools/check_output.py [FILE|-] [--format auto|prtg-xml|prtg-json|script-v2]

Exit 0 and "OK: ..." when the document follows PRTG's documented formats; exit 1 and one line
per problem otherwise. Only PRTG's own formats are handled. The rules, each one a test in
tests/test_check_output.py:

Every format
  R1  no byte order mark, nothing around the document (one XML element or one JSON value)
  R2  the text / message is a string of at most 2,000 characters
  R3  an error needs a text that says what failed

EXE/Script Advanced (XML or JSON) and Python Script Advanced (JSON)
  R4  the root is <prtg> / {"prtg": {...}}; under it only result, text and error
  R5  error is 0 or 1
  R6  without an error: 1 to 50 results, each with a channel name, names unique
  R7  inside a result only the documented elements: channel value unit customunit speedsize
      volumesize speedtime mode float decimalmode warning showchart showtable limitmaxerror
      limitmaxwarning limitminwarning limitminerror limiterrormsg limitwarningmsg limitmode
      valuelookup notifychanged (tag names are compared without regard to case, as PRTG does)
  R8  value: a number with '.' as decimal separator (JSON: a number, not a string); a
      fractional value needs float=1; integers within the signed 64-bit range (JSON, which
      Python Script Advanced reads too: within +-2^62, that sensor's documented limit)
  R9  unit one of PRTG's units; float, warning, showchart, showtable 0 or 1; decimalmode Auto
      or All; mode Absolute or Difference; speedsize/volumesize/speedtime from their lists
  R10 limitmode 0 or 1; every limit a number
  R11 valuelookup a non-empty lookup id (the lookup itself lives on the core server)

Script v2 (PRTG's JSON schema, Paessler knowledge base article 91280)
  R12 an object with version 2 (an integer), status ok|warning|error, optional message and
      channels; no other keys
  R13 at most 50 channels; ids integers from 10 to 2^31-1; ids and names unique
  R14 type integer|float|counter|lookup, and the value to match: integer and counter take
      integers (counter: not negative), float any finite number, lookup an integer and a
      lookup_name; integers within the signed 64-bit range
  R15 integer, float and counter channels name a known kind (V2_KINDS); only the keys
      id, name, type, kind, value, lookup_name, display_unit (display_unit with kind custom)

XML is parsed with defusedxml. Whatever the input, the checker answers with problems, never
with an exception. The test suite runs every document it produces through `check()`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Any, Dict, List, Optional

UNITS = {
    "BytesBandwidth", "BytesDisk", "BytesFile", "BytesMemory", "Count", "CPU", "Custom", "Percent",
    "SpeedDisk", "SpeedNet", "Temperature", "TimeHours", "TimeResponse", "TimeSeconds",
}
RESULT_ELEMENTS = {
    "channel", "value", "unit", "customunit", "speedsize", "volumesize", "speedtime", "mode", "float",
    "decimalmode", "warning", "showchart", "showtable", "limitmaxerror", "limitmaxwarning",
    "limitminwarning", "limitminerror", "limiterrormsg", "limitwarningmsg", "limitmode", "valuelookup",
    "notifychanged",
}
LIMITS = ("limitmaxerror", "limitmaxwarning", "limitminwarning", "limitminerror")
FLAGS = ("float", "warning", "showchart", "showtable", "limitmode")
SIZES = {
    "One", "Kilo", "Mega", "Giga", "Tera", "Byte", "KiloByte", "MegaByte", "GigaByte", "TeraByte",
    "Bit", "KiloBit", "MegaBit", "GigaBit", "TeraBit",
}
CHOICES = {
    "decimalmode": {"Auto", "All"},
    "mode": {"Absolute", "Difference"},
    "speedsize": SIZES,
    "volumesize": SIZES,
    "speedtime": {"Second", "Minute", "Hour", "Day"},
}
TOP_ELEMENTS = {"result", "text", "error"}
TEXT_LIMIT = 2000
MAX_CHANNELS = 50
INT64 = (-(2**63), 2**63 - 1)
PYTHON_SCRIPT_LIMIT = 2**62  # Python Script Advanced: "channel values greater than 2^62 are not supported"
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

V2_STATUS = ("ok", "warning", "error")
V2_TYPES = ("integer", "float", "counter", "lookup")
# Script v2 kinds. Paessler's schema (KB 91280) was only partly readable here: time_milliseconds
# and count are in PRTG's own examples, custom (with display_unit) in public Script v2 scripts;
# the others are the schema's further kinds as far as known (unconfirmed, see the README).
V2_KINDS = (
    "count", "custom", "percent", "time_milliseconds", "time_seconds", "time_hours", "size_bytes_memory",
    "size_bytes_disk", "size_bytes_file", "size_bytes_bandwidth", "temperature_celsius",
)
V2_CHANNEL_KEYS = {"id", "name", "type", "kind", "value", "lookup_name", "display_unit"}
V2_ID_RANGE = (10, 2_147_483_647)


class Document:
    """A parsed document in one shape, whatever the format: error flag, text, results."""

    def __init__(self, fmt: str, error: bool, text: Optional[str], results: List[Dict[str, Any]],
                 warning: bool = False):
        self.format = fmt
        self.error = error
        self.text = text
        self.results = results
        self.warning = warning

    def channel(self, name: str) -> Dict[str, Any]:
        return next(r for r in self.results if r.get("channel") == name)

    def value(self, name: str) -> float:
        return float(self.channel(name)["value"])

    @property
    def channel_names(self) -> List[str]:
        return [str(r.get("channel")) for r in self.results]


class DocumentError(ValueError):
    def __init__(self, problems: List[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _loads(text: str, problems: List[str]) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        problems.append(f"JSON does not parse: {str(exc)[:200]}")
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# ---------------------------------------------------------------- EXE/Script Advanced, Python


def _parse_xml(text: str, problems: List[str]) -> Optional[Document]:
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(text.encode("utf-8", "surrogatepass"))
    except Exception as exc:  # noqa: BLE001 - any parse failure (or refused entity) is the finding
        problems.append(f"XML does not parse: {str(exc)[:200]}")
        return None
    if str(root.tag).lower() != "prtg":
        problems.append(f"root element is <{root.tag}>, not <prtg>")
        return None
    top: Dict[str, Any] = {}
    results: List[Dict[str, Any]] = []
    for child in root:
        tag = str(child.tag).lower()
        if tag == "result":
            result: Dict[str, Any] = {}
            for element in child:
                key = str(element.tag).lower()
                if key in result:
                    problems.append(f"<{key}> twice in one result")
                result[key] = (element.text or "").strip()
            results.append(result)
        elif tag in top:
            problems.append(f"<{tag}> twice under <prtg>")
        else:
            top[tag] = child.text or ""
    return _document("prtg-xml", top, results, problems, xml=True)


def _parse_json(text: str, problems: List[str]) -> Optional[Document]:
    data = _loads(text, problems)
    if data is None:
        return None
    prtg = data.get("prtg") if isinstance(data, dict) else None
    if not isinstance(prtg, dict) or len(data) != 1:
        problems.append('JSON must be one object {"prtg": {...}}')
        return None
    top = {str(k).lower(): v for k, v in prtg.items()}
    raw = top.pop("result", [])
    if isinstance(raw, dict):  # one result may stand alone
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        problems.append('"result" must be a list of objects')
        raw = []
    results = []
    for r in raw:
        result: Dict[str, Any] = {}
        for key, value in r.items():
            key = str(key).lower()
            if key == "value" and not _is_number(value):
                problems.append(f"{r.get('channel')!r}: value {value!r} is not a JSON number")
            if isinstance(value, (dict, list)):
                problems.append(f"{r.get('channel')!r}: {key} must be a plain value")
            result[key] = value if isinstance(value, str) else json.dumps(value)
        results.append(result)
    top["result"] = None
    return _document("prtg-json", top, results, problems, xml=False)


def _document(fmt: str, top: Dict[str, Any], results: List[Dict[str, Any]], problems: List[str],
              xml: bool) -> Document:
    unknown = set(top) - TOP_ELEMENTS
    if unknown:
        problems.append(f"unknown elements under prtg: {sorted(unknown)} (warning belongs inside a result)")
    error = top.get("error", 0)
    if isinstance(error, str):
        error = error.strip()
    if error not in (0, 1, "0", "1") or isinstance(error, bool):
        problems.append(f"error must be 0 or 1, not {error!r}")
    text = top.get("text")
    if text is not None and not isinstance(text, str):
        problems.append(f"text must be a string, not {type(text).__name__}")
        text = None
    is_error = error in (1, "1")
    warning = any(str(r.get("warning", "0")).strip() == "1" for r in results)
    doc = Document(fmt, is_error, text, results, warning)
    _check_results(doc, problems, value_limit=INT64[1] if xml else PYTHON_SCRIPT_LIMIT)
    return doc


def _check_results(doc: Document, problems: List[str], value_limit: int) -> None:
    if doc.error:
        return
    if not doc.results:
        problems.append("no channel results and no error")
    if len(doc.results) > MAX_CHANNELS:
        problems.append(f"{len(doc.results)} channels; PRTG takes at most {MAX_CHANNELS}")
    names = doc.channel_names
    if len(set(names)) != len(names):
        problems.append(f"channel names are not unique: {names}")
    for r in doc.results:
        name = r.get("channel")
        if not name or not str(name).strip():
            problems.append("a result without a channel name")
            continue
        unknown = set(r) - RESULT_ELEMENTS
        if unknown:
            problems.append(f"{name}: unknown elements in the result: {sorted(unknown)}")
        value = str(r.get("value", ""))
        if not _NUMBER.match(value):
            problems.append(f"{name}: value {value[:40]!r} is not a number with '.' as decimal separator")
        else:
            if "." in value and r.get("float") != "1":
                problems.append(f"{name}: fractional value without float=1 shows as an integer")
            if not _within(value, value_limit):
                problems.append(f"{name}: value {value[:40]} is outside the supported range (|value| <= {value_limit})")
        unit = r.get("unit", "Custom")
        if unit not in UNITS:
            problems.append(f"{name}: unknown unit {str(unit)[:40]!r}")
        for flag in FLAGS:
            if flag in r and str(r[flag]).strip() not in ("0", "1"):
                problems.append(f"{name}: {flag} must be 0 or 1, not {str(r[flag])[:40]!r}")
        for key, allowed in CHOICES.items():
            if key in r and r[key] not in allowed:
                problems.append(f"{name}: {key} {str(r[key])[:40]!r} is not one of {sorted(allowed)}")
        for limit in LIMITS:
            if limit in r and not _NUMBER.match(str(r[limit]).strip()):
                problems.append(f"{name}: {limit} {str(r[limit])[:40]!r} is not a number")
        if "valuelookup" in r and not str(r["valuelookup"]).strip():
            problems.append(f"{name}: valuelookup is empty")


def _within(value: str, limit: int) -> bool:
    """-limit-1 <= value <= limit, exactly for integers (and without int()'s digit limit)."""
    if "." in value:
        return -limit - 1 <= float(value) <= limit
    if len(value.lstrip("-")) > 30:
        return False
    return -limit - 1 <= int(value) <= limit


# ---------------------------------------------------------------- Script v2


def _parse_v2(text: str, problems: List[str]) -> Optional[Document]:
    """Script v2: {"version": 2, "status": ..., "message": ..., "channels": [{id, name, type, kind, value}]}."""
    data = _loads(text, problems)
    if data is None:
        return None
    if not isinstance(data, dict) or not _is_int(data.get("version")) or data.get("version") != 2:
        problems.append('Script v2 needs an object with "version": 2')
        return None
    status = data.get("status")
    if not isinstance(status, str) or status not in V2_STATUS:
        problems.append(f"status {status!r} is not one of {V2_STATUS}")
    message = data.get("message", "")
    if not isinstance(message, str):
        problems.append("message must be a string")
        message = ""
    unknown = set(data) - {"version", "status", "message", "channels"}
    if unknown:
        problems.append(f"unknown keys: {sorted(map(str, unknown))}")
    channels = data.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
        problems.append('"channels" must be a list of objects')
        channels = []
    if len(channels) > MAX_CHANNELS:
        problems.append(f"{len(channels)} channels; PRTG takes at most {MAX_CHANNELS}")
    ids = [json.dumps(c.get("id")) for c in channels]
    names = [json.dumps(c.get("name")) for c in channels]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        problems.append(f"channel ids and names must be unique: {ids} {names}")
    results = [_check_v2_channel(c, problems) for c in channels]
    if status == "error" and not message:
        problems.append("an error status needs a message that says what failed")
    return Document("script-v2", status == "error", message, results, status == "warning")


def _check_v2_channel(c: Dict[str, Any], problems: List[str]) -> Dict[str, Any]:
    cid: Any = c.get("id")
    value: Any = c.get("value")
    name, kind, ctype = c.get("name"), c.get("kind"), c.get("type")
    label = repr(name)[:60]
    if not _is_int(cid) or not V2_ID_RANGE[0] <= cid <= V2_ID_RANGE[1]:
        problems.append(f"{label}: id {cid!r} is not an integer from 10 to 2^31-1")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"channel {cid!r}: no name")
    unknown = set(c) - V2_CHANNEL_KEYS
    if unknown:
        problems.append(f"{label}: unknown keys {sorted(map(str, unknown))}")
    if not isinstance(ctype, str) or ctype not in V2_TYPES:
        problems.append(f"{label}: type {ctype!r} is not one of {V2_TYPES}")
    if ctype == "float":
        if not _is_number(value):
            problems.append(f"{label}: value {value!r} is not a number")
    elif ctype in ("integer", "counter", "lookup"):
        if not _is_int(value):
            problems.append(f"{label}: a {ctype} channel with value {value!r}, not an integer")
        elif not INT64[0] <= value <= INT64[1]:
            problems.append(f"{label}: value {value} is outside the signed 64-bit range")
        elif ctype == "counter" and value < 0:
            problems.append(f"{label}: a counter cannot be negative ({value})")
    if ctype == "lookup":
        if not isinstance(c.get("lookup_name"), str) or not c["lookup_name"].strip():
            problems.append(f"{label}: a lookup channel needs a lookup_name")
        if "kind" in c or "display_unit" in c:
            problems.append(f"{label}: a lookup channel takes no kind or display_unit")
    elif ctype in ("integer", "float", "counter"):
        if not isinstance(kind, str) or kind not in V2_KINDS:
            problems.append(f"{label}: kind {kind!r} is not one of {V2_KINDS}")
        if "lookup_name" in c:
            problems.append(f"{label}: lookup_name on a {ctype} channel")
        if "display_unit" in c and (kind != "custom" or not isinstance(c["display_unit"], str)):
            problems.append(f"{label}: display_unit is a string for kind custom only")
    return {"channel": name, "value": json.dumps(value), "kind": kind, "id": cid, "type": ctype}


# ---------------------------------------------------------------- entry points


def parse(text: str, fmt: str = "auto") -> Document:
    """The document, or DocumentError listing every reason PRTG would refuse it."""
    problems: List[str] = []
    if not isinstance(text, str):
        raise DocumentError(["not text"])
    if text.startswith("\ufeff"):
        problems.append("starts with a byte order mark")
        text = text[1:]
    stripped = text.strip()
    if fmt == "auto":
        fmt = "prtg-xml" if stripped.startswith("<") else "script-v2" if '"version"' in stripped else "prtg-json"
    parsers = {"prtg-xml": _parse_xml, "prtg-json": _parse_json, "script-v2": _parse_v2}
    if fmt not in parsers:
        raise DocumentError([f"unknown format {fmt!r}: the checker knows {sorted(parsers)}"])
    doc = parsers[fmt](stripped, problems)
    if doc is not None:
        if doc.text is not None and len(doc.text) > TEXT_LIMIT:
            problems.append(f"text has {len(doc.text)} characters; PRTG cuts at {TEXT_LIMIT}")
        if doc.error and not (doc.text or "").strip():
            problems.append("an error document needs a text that says what failed")
    if problems or doc is None:
        raise DocumentError(problems or ["not a document"])
    return doc


def check(text: str, fmt: str = "auto") -> List[str]:
    """Every problem found; empty when PRTG will accept the document."""
    try:
        parse(text, fmt)
    except DocumentError as exc:
        return exc.problems
    return []


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("file", nargs="?", default="-")
    ap.add_argument("--format", default="auto", choices=["auto", "prtg-xml", "prtg-json", "script-v2"])
    args = ap.parse_args(argv)
    if args.file == "-":
        text = sys.stdin.buffer.read().decode("utf-8", "replace")
    else:
        with open(args.file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    try:
        doc = parse(text, args.format)
    except DocumentError as exc:
        for problem in exc.problems:
            print(f"PROBLEM: {problem}")
        return 1
    state = "error" if doc.error else ("warning" if doc.warning else "ok")
    print(f"OK: {doc.format}, {state}, {len(doc.results)} channels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

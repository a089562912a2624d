#!/usr/bin/env python3
"""Will PRTG accept this document? Reads one sensor output (a file or stdin) and says why not.

    python3 tools/check_output.py [FILE|-] [--format auto|prtg-xml|prtg-json|script-v2]

Exit 0 and "OK: ..." when the document follows PRTG's rules for EXE/Script Advanced (XML,
JSON), Python Script Advanced (JSON) and Script v2 sensors (../shared/reference/
prtg-custom-sensors.md); exit 1 and one line per problem otherwise: no BOM, nothing around the
document, a text within 2,000 characters, at most 50 channels with unique names (and, for
Script v2, unique ids from 10 up), numbers with '.' decimals, known units, float=1 for
fractional values, and an error needs a text. XML is parsed with defusedxml. The test suite
runs every document it produces through `check()`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Dict, List, Optional

UNITS = {
    "BytesBandwidth", "BytesDisk", "BytesFile", "BytesMemory", "Count", "CPU", "Custom", "Percent",
    "SpeedDisk", "SpeedNet", "Temperature", "TimeHours", "TimeResponse", "TimeSeconds",
}
TEXT_LIMIT = 2000
MAX_CHANNELS = 50
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


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


def _parse_xml(text: str, problems: List[str]) -> Optional[Document]:
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(text.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
        problems.append(f"XML does not parse: {exc}")
        return None
    if root.tag != "prtg":
        problems.append(f"root element is <{root.tag}>, not <prtg>")
        return None
    results = []
    for element in root.findall("result"):
        results.append({child.tag: (child.text or "") for child in element})
    unknown = {child.tag for child in root} - {"result", "text", "error", "warning"}
    if unknown:
        problems.append(f"unknown elements under <prtg>: {sorted(unknown)}")
    error = (root.findtext("error") or "0").strip()
    warning = (root.findtext("warning") or "0").strip()
    return Document("prtg-xml", error == "1", root.findtext("text"), results, warning == "1")


def _parse_json(text: str, problems: List[str]) -> Optional[Document]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        problems.append(f"JSON does not parse: {exc}")
        return None
    prtg = data.get("prtg") if isinstance(data, dict) else None
    if not isinstance(prtg, dict) or len(data) != 1:
        problems.append('JSON must be one object {"prtg": {...}}')
        return None
    results = prtg.get("result", [])
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        problems.append('"result" must be a list of objects')
        results = []
    for r in results:
        for key, value in r.items():
            if isinstance(value, float) and value != value:
                problems.append(f"{key} is NaN")
            r[key] = value if isinstance(value, str) else json.dumps(value)
    unknown = set(prtg) - {"result", "text", "error", "warning"}
    if unknown:
        problems.append(f"unknown keys under prtg: {sorted(unknown)}")
    return Document("prtg-json", str(prtg.get("error", 0)) == "1", prtg.get("text"), results,
                    str(prtg.get("warning", 0)) == "1")


V2_STATUS = ("ok", "warning", "error")
V2_TYPES = ("integer", "float", "lookup")


def _parse_v2(text: str, problems: List[str]) -> Optional[Document]:
    """Script v2: {"version": 2, "status": ..., "message": ..., "channels": [{id, name, type, kind, value}]}."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        problems.append(f"JSON does not parse: {exc}")
        return None
    if not isinstance(data, dict) or data.get("version") != 2:
        problems.append('Script v2 needs an object with "version": 2')
        return None
    status = data.get("status")
    if status not in V2_STATUS:
        problems.append(f"status {status!r} is not one of {V2_STATUS}")
    message = data.get("message", "")
    if not isinstance(message, str):
        problems.append("message must be a string")
        message = str(message)
    unknown = set(data) - {"version", "status", "message", "channels"}
    if unknown:
        problems.append(f"unknown keys: {sorted(unknown)}")
    channels = data.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
        problems.append('"channels" must be a list of objects')
        channels = []
    if len(channels) > MAX_CHANNELS:
        problems.append(f"{len(channels)} channels; PRTG takes at most {MAX_CHANNELS}")
    ids = [c.get("id") for c in channels]
    names = [c.get("name") for c in channels]
    if len(set(map(str, ids))) != len(ids) or len(set(map(str, names))) != len(names):
        problems.append(f"channel ids and names must be unique: {ids} {names}")
    results = []
    for c in channels:
        cid, name, kind, value = c.get("id"), c.get("name"), c.get("kind"), c.get("value")
        if not isinstance(cid, int) or isinstance(cid, bool) or not 10 <= cid <= 2_147_483_647:
            problems.append(f"{name}: id {cid!r} is not an integer from 10 up")
        if not isinstance(name, str) or not name:
            problems.append(f"channel {cid}: no name")
        if c.get("type") not in V2_TYPES:
            problems.append(f"{name}: type {c.get('type')!r} is not one of {V2_TYPES}")
        if c.get("type") == "lookup":  # a value lookup: its id instead of a kind, a whole number
            if not isinstance(c.get("lookup_name"), str) or not c.get("lookup_name"):
                problems.append(f"{name}: a lookup channel without lookup_name")
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{name}: a lookup channel with value {value!r}, not an integer")
        elif not isinstance(kind, str) or not kind:
            problems.append(f"{name}: no kind")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            problems.append(f"{name}: value {value!r} is not a number")
        elif c.get("type") == "integer" and not isinstance(value, int):
            problems.append(f"{name}: an integer channel with value {value!r}")
        results.append({"channel": name, "value": json.dumps(value), "kind": kind, "id": cid, "type": c.get("type")})
    if status == "error" and not message:
        problems.append("an error status needs a message that says what failed")
    return Document("script-v2", status == "error", message, results, status == "warning")


def _check_results(doc: Document, problems: List[str]) -> None:
    if doc.error:
        if not doc.text:
            problems.append("an error document needs a text that says what failed")
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
        if not name:
            problems.append("a result without a channel name")
            continue
        value = str(r.get("value", ""))
        if not _NUMBER.match(value):
            problems.append(f"{name}: value {value!r} is not a number with '.' as decimal separator")
        elif "." in value and r.get("float") != "1":
            problems.append(f"{name}: fractional value without float=1 shows as an integer")
        unit = r.get("unit", "Custom")
        if unit not in UNITS:
            problems.append(f"{name}: unknown unit {unit!r}")
        if r.get("float", "0") not in ("0", "1"):
            problems.append(f"{name}: float must be 0 or 1")


def parse(text: str, fmt: str = "auto") -> Document:
    """The document, or DocumentError listing every reason PRTG would refuse it."""
    problems: List[str] = []
    if text.startswith("\ufeff"):
        problems.append("starts with a byte order mark")
        text = text[1:]
    stripped = text.strip()
    if fmt == "auto":
        fmt = "prtg-xml" if stripped.startswith("<") else "script-v2" if '"version"' in stripped else "prtg-json"
    parsers = {"prtg-xml": _parse_xml, "prtg-json": _parse_json, "script-v2": _parse_v2}
    doc = parsers[fmt](stripped, problems)
    if doc is not None and fmt != "script-v2":
        _check_results(doc, problems)
    if doc is not None:
        if doc.text is not None and len(doc.text) > TEXT_LIMIT:
            problems.append(f"text has {len(doc.text)} characters; PRTG cuts at {TEXT_LIMIT}")
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

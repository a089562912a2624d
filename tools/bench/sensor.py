"""What a sensor run printed: the document (read by tools/check_output.py's own parser) and the transcript."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import parsers
from .procs import Proc
from .util import load_tool


def check_output() -> Any:
    """tools/check_output.py, the project's document parser (loaded by path, as tests/conftest.py does)."""
    return load_tool("check_output")


@dataclass
class Doc:
    """The parts of a PRTG document the bench reads: error flag, text, channel values."""

    error: bool
    text: str
    channels: Dict[str, float]


def parse_document(stdout: str) -> Tuple[Optional[Doc], List[str]]:
    """(the document, []) or (None, the reasons PRTG would refuse it) by check_output.parse()."""
    co = check_output()
    try:
        document = co.parse(stdout.strip())
    except co.DocumentError as exc:
        return None, list(exc.problems)
    channels: Dict[str, float] = {}
    for result in document.results:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            channels[str(result["channel"])] = float(result["value"])
    return Doc(bool(document.error), str(document.text or ""), channels), []


@dataclass
class SensorRun:
    proc: Proc
    doc: Optional[Doc]
    refused: List[str] = field(default_factory=list)  # check_output's reasons when doc is None

    @classmethod
    def of(cls, proc: Proc) -> SensorRun:
        doc, problems = parse_document(proc.stdout)
        return cls(proc, doc, problems)

    @property
    def ok(self) -> bool:
        doc = self.doc
        return self.proc.returncode == 0 and doc is not None and not doc.error and "Total" in doc.channels

    @property
    def channels(self) -> Dict[str, float]:
        return self.doc.channels if self.doc else {}

    def channel(self, name: str) -> float:
        assert self.doc is not None
        return self.doc.channels[name]

    @property
    def total(self) -> float:
        return self.channel("Total")

    @property
    def imap_ms(self) -> float:
        return self.channel("Response Time (IMAP)")

    @property
    def smtp_ms(self) -> float:
        return self.channel("Response Time (SMTP)")

    @property
    def problem(self) -> str:
        if self.doc is None:
            why = "; ".join(self.refused[:3]) or "no document"
            return f"exit {self.proc.returncode}, {why}: {(self.proc.stdout + self.proc.stderr)[-300:]!r}"
        return f"exit {self.proc.returncode}: {self.doc.text[:300]}"

    @property
    def detection(self) -> str:
        return parsers.detection(self.doc.text if self.doc else "")

    def accepted_at(self) -> Optional[float]:
        """The SMTP 250 after DATA on the system-wide monotonic clock (needs --verbose)."""
        origin = parsers.clock_origin(self.proc.stderr)
        accepted = parsers.accepted_ms(self.proc.stderr)
        if origin is None or accepted is None:
            return None
        return origin + accepted / 1000.0

    def imap_session(self) -> Optional[Tuple[float, float]]:
        """From IMAP connect to the last IMAP line, on the monotonic clock (needs --verbose)."""
        origin = parsers.clock_origin(self.proc.stderr)
        span = parsers.imap_span(self.proc.stderr)
        if origin is None or span is None:
            return None
        return origin + span[0] / 1000.0, origin + span[1] / 1000.0

    def command_times(self) -> Dict[str, List[float]]:
        return parsers.command_times(self.proc.stderr)

"""Pure parsers of what a sensor run prints: its --verbose transcript, and `python -X importtime`.

The transcript starts with ``RUN * clock origin <s> s (time.perf_counter)``; every line after it
carries milliseconds since that origin (``   12.3 ms SMTP > ...``).  On Linux perf_counter and
the bench's time.monotonic() both read CLOCK_MONOTONIC, so origin + ms is a moment on the
bench's own clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

ORIGIN = re.compile(r"clock origin ([0-9.]+) s")
ACCEPTED = re.compile(r"^\s*([0-9.]+) ms SMTP < 250[ -].*queued as", re.MULTILINE)
SMTP_CONNECT = re.compile(r"^\s*([0-9.]+) ms SMTP \* connecting", re.MULTILINE)
STAMP = re.compile(r"^\s*([0-9.]+) ms ", re.MULTILINE)
IMAP_STAMP = re.compile(r"^\s*([0-9.]+) ms IMAP ", re.MULTILINE)
DETECTION = re.compile(r"\((IDLE push|polling), (\d+) checks?\)")  # "1 check", "2 checks"
IMAP_LINE = re.compile(r"^\s*([0-9.]+) ms IMAP ([<>]) (\S+) (.*)$")
MESSAGE_SIZE = re.compile(r"^\s*[0-9.]+ ms SMTP > <message data, (\d+) bytes>", re.MULTILINE)
SMTP_AUTH = re.compile(r"^\s*[0-9.]+ ms SMTP > AUTH (\S+)", re.MULTILINE)
IMAP_LOGIN = re.compile(r"^\s*[0-9.]+ ms IMAP > (AUTHENTICATE \S+|LOGIN)\b", re.MULTILINE)
IMPORT_LINE = re.compile(r"^import time:\s*(\d+) \|\s*(\d+) \|( *)(\S.*)$")


def clock_origin(transcript: str) -> Optional[float]:
    """The transcript's origin in seconds of the monotonic clock."""
    match = ORIGIN.search(transcript)
    return float(match.group(1)) if match else None


def accepted_ms(transcript: str) -> Optional[float]:
    """Milliseconds from the origin to the SMTP 250 after DATA (``queued as``)."""
    match = ACCEPTED.search(transcript)
    return float(match.group(1)) if match else None


def smtp_connect_ms(transcript: str) -> Optional[float]:
    match = SMTP_CONNECT.search(transcript)
    return float(match.group(1)) if match else None


def stamps(transcript: str) -> List[float]:
    """Every line's milliseconds, in order."""
    return [float(m.group(1)) for m in STAMP.finditer(transcript)]


def imap_span(transcript: str) -> Optional[Tuple[float, float]]:
    """(first IMAP line, last IMAP line) in ms since the origin."""
    found = [float(m.group(1)) for m in IMAP_STAMP.finditer(transcript)]
    return (found[0], found[-1]) if found else None


def detection(text: str) -> str:
    """How the probe was seen, from the document's text: 'IDLE push', 'polling' or '?'."""
    match = DETECTION.search(text)
    return match.group(1) if match else "?"


def checks(text: str) -> Optional[int]:
    match = DETECTION.search(text)
    return int(match.group(2)) if match else None


def message_size(transcript: str) -> Optional[int]:
    """The bytes of the probe the sensor sent after DATA (``SMTP > <message data, N bytes>``)."""
    match = MESSAGE_SIZE.search(transcript)
    return int(match.group(1)) if match else None


def smtp_auth_mechanism(transcript: str) -> Optional[str]:
    """The SASL mechanism of the sensor's ``AUTH`` command, or None when it did not log in."""
    match = SMTP_AUTH.search(transcript)
    return match.group(1).upper() if match else None


def imap_login_command(transcript: str) -> Optional[str]:
    """``AUTHENTICATE PLAIN`` (or another mechanism) or ``LOGIN``: how the sensor logged in to IMAP."""
    match = IMAP_LOGIN.search(transcript)
    return match.group(1).upper() if match else None


def command_times(transcript: str) -> Dict[str, List[float]]:
    """Milliseconds from each IMAP command to its tagged answer, by command name."""
    sent: Dict[str, Tuple[str, float]] = {}
    times: Dict[str, List[float]] = {}
    for line in transcript.splitlines():
        match = IMAP_LINE.match(line)
        if not match:
            continue
        ms, direction, tag, rest = float(match.group(1)), match.group(2), match.group(3), match.group(4)
        if direction == ">":
            words = rest.split()
            name = " ".join(words[:2]) if words[:1] == ["UID"] else (words[0] if words else "?")
            if words[:3] == ["UID", "SEARCH", "HEADER"]:
                name = "UID SEARCH HEADER (leftover sweep)"
            sent[tag] = (name, ms)
        elif tag in sent:
            name, began = sent.pop(tag)
            times.setdefault(name, []).append(ms - began)
    return times


# -- python -X importtime -------------------------------------------------------------------------


@dataclass
class Import:
    name: str
    cumulative_us: int
    level: int
    children: List[Import] = field(default_factory=list)


def parse_importtime(stderr: str) -> List[Import]:
    """The top-level imports of `python -X importtime`, each with its children (a tree)."""
    pending: Dict[int, List[Import]] = {}
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if not match:
            continue
        level = (len(match.group(3)) - 1) // 2
        node = Import(match.group(4).strip(), int(match.group(2)), level, pending.pop(level + 1, []))
        pending.setdefault(level, []).append(node)
    return pending.get(0, [])


def first_foreign(nodes: List[Import], prefix: str = "prtg_roundtrip") -> Iterator[Import]:
    """Below the project's modules: the first import of each chain that is not the project's."""
    for node in nodes:
        if node.name.startswith(prefix):
            yield from first_foreign(node.children, prefix)
        else:
            yield node

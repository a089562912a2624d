#!/usr/bin/env python3
"""Benchmark of the round-trip sensor against the real local mail stack: prints figures, not a test.

Reproduce (as root on Debian 12, from the repository root; about two to three minutes)::

    python3 tools/bench.py                      # everything, 7 runs per figure
    python3 tools/bench.py --runs 3 --only lag,overhead
    python3 tools/bench.py --json               # the table, then one JSON line with every figure
    python3 tools/bench.py --probe-command '{python} -m prtg_roundtrip --smtp-host {smtp_host} ...'

Use an interpreter that has the package's dependencies (imapclient, jinja2, defusedxml): the
sensor runs as ``PYTHON -m prtg_roundtrip`` from the repository root, PYTHON being this
interpreter unless ``--python`` names another.  The bench starts its own Postfix + Dovecot with
tools/mailstack.py on port base 14000 in /tmp/prtg-roundtrip-bench-14000 (``--port-base``,
``--dir``), loopback only, and stops it at the end (``--keep-stack`` leaves it running; a
directory the bench created is removed).  Every sensor run is a separate process, started the way
PRTG starts it; every figure below is the median of ``--runs`` runs (min and max beside it)
unless it says otherwise.  Plain text (``--smtp-tls off --imap-tls off``) everywhere except the
TLS overhead variant.

What each figure means, exactly:

lag (user probe, empty INBOX, ``--verbose --format prtg-json``)
    The sensor's transcript starts with ``RUN * clock origin <s> (time.perf_counter)`` and every
    line carries milliseconds since that origin; on Linux perf_counter and the bench's
    time.monotonic() both read CLOCK_MONOTONIC.  *accepted* = the transcript line
    ``SMTP < 250 ... queued as`` (the sensor's IMAP leg starts there).  *delivered* = the moment
    the bench's inotify watch (IN_CREATE/IN_MOVED_TO on the probe user's ``Maildir/new``, a
    thread of this process) saw the message file appear.
    ``delivery`` = delivered - accepted.  ``detection lag`` = the sensor's
    ``Response Time (IMAP)`` channel - delivery: how long after the message was really in the
    mailbox the sensor noticed it.  Measured for ``--wait auto`` (IDLE is available on Dovecot)
    and ``--wait poll``, runs interleaved.  Target: median <= 5 ms.
    On loopback Postfix delivers within a few milliseconds, inside the sensor's fast-check
    phase, so neither mode gets as far as IDLE.  The *delayed* rows therefore send through a
    store-and-forward relay inside the bench (127.0.0.1, port base + 99) that answers
    ``250 queued`` at once and hands the mail to Postfix ``--relay-delay`` seconds later: that
    exercises the sensor's IDLE wait (auto) and its slow polling (poll) the way a slow real
    server would.  Same definition, same target.
overhead (user probe, ``--format prtg-json``, no ``--verbose``)
    ``overhead`` = the process's wall time (from just before the spawn to its exit, reaped with
    os.wait4) - its own ``Total`` channel: interpreter start, imports, IMAP login before the
    send, deleting the probe, the sweep for leftover probes, LOGOUT, rendering.  Target <= 100 ms.  ``peak RSS`` =
    ru_maxrss of that process from os.wait4 (KiB on Linux, shown in MiB).  Target <= 40 MiB.
    A child forked straight from this (bigger) process would report this process's peak instead
    of its own (exec() carries the old address space's high-water mark into ru_maxrss), so
    every measured run is started by a minimal ``python -S -I`` spawner that does the
    posix_spawn and the wait4 and writes the figures down; its own peak (about 8 MiB) is the
    floor a reading cannot go below, printed as a note.  Plain text and a TLS variant
    (``--smtp-tls starttls --imap-tls starttls --ca-file``).  The same runs again with
    ``--verbose`` split the overhead into phases by the transcript's clock: spawn -> transcript
    origin (interpreter, imports, option parsing), origin -> SMTP connect (IMAP connect, login,
    SELECT), found -> last line (delete, sweep, LOGOUT), last line -> exit (rendering, exit).
    Also, for information: wall time and peak RSS of ``--help`` and of a refused parameter,
    and ``python -X importtime`` of those and of a plain round trip: the sum of all top-level
    cumulative import times, the part under prtg_roundtrip, and the heaviest imports.
bigmailbox (plain, ``--wait auto``, ``--verbose``)
    The ``other`` user's INBOX gets ``--messages`` (50,000) Maildir files written straight into
    ``cur/`` (owner and mode as the Maildir's), indexed once by an untimed warm-up client (SELECT
    and FETCH 1:* (FLAGS)).  Runs then alternate: probe's empty INBOX, other's full INBOX, for
    ``--search server`` and ``--search local``.  ``ratio`` = median Total (full) / median Total
    (empty, same phase): one number per search method.  Target <= 1.2x for both.  To show
    where a difference comes from, each side's delivery and detection lag (as in lag, with an
    inotify watch on each user's ``new/``) and the median server time per IMAP command (from
    the transcripts) are printed too, and a calibration ratio of the two users while both were
    still empty.  The messages are removed afterwards (files deleted, Dovecot resynced).
concurrent (user probe, plain, ``--wait auto``)
    ``--concurrency`` (20) sensors started at once against the same INBOX, ``--runs`` rounds:
    every one must print a successful document (no error).  Their median Total next to the
    median Total of lone runs, and the ratio (information).
compare (only with ``--probe-command``)
    Another probe command, a shell-split template with placeholders {smtp_host} {smtp_port}
    {imap_host} {imap_port} (the plain-text ports) {user} {password} {from} {to} {ca_file}
    {python} {smtp_starttls_port} {imap_starttls_port} {smtps_port} {imaps_port}
    {submission_port}, runs as many times as the sensor, alternating with it, against the same
    stack.  ``ratio`` = its median wall time / the sensor's; where it prints a PRTG document
    (JSON or XML) with a Total channel, the ratio of median Totals too.  Messages it leaves in
    probe's INBOX are counted and removed.  Example, the sensor itself over STARTTLS::

        --probe-command '{python} -m prtg_roundtrip --smtp-host {smtp_host} --smtp-port
        {smtp_starttls_port} --imap-host {imap_host} --imap-port {imap_starttls_port}
        --ca-file {ca_file} --imap-user {user} --imap-password {password} --from {from} --to {to}'

Output: a table on stdout (figure, median, min, max, target, PASS/MISS), notes below it, the
bench's wall time, and with ``--json`` one last line of JSON with every figure.  Progress goes
to stderr.  Stdlib plus the project's dependencies; Python 3.9 to 3.13; Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import imaplib
import importlib.util
import json
import os
import re
import select
import shlex
import shutil
import signal
import smtplib
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("lag", "overhead", "bigmailbox", "concurrent")

LAG_TARGET_MS = 5.0
OVERHEAD_TARGET_MS = 100.0
RSS_TARGET_MIB = 40.0
BIG_RATIO_TARGET = 1.2

RUN_TIMEOUT = 90.0  # seconds a sensor process may take before the bench kills it
SENSOR_TIMEOUT = "30"  # the sensor's own --timeout
FILLER_MARK = "prtg-bench-filler"
MAX_WATCH_SECONDS = 4 * 3600.0  # the inotify thread ends after this whatever happens
RELAY_OFFSET = 99  # the delaying relay listens on port base + 99 (the stack uses 25..993)

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

_ORIGIN = re.compile(r"clock origin ([0-9.]+) s")
_ACCEPTED = re.compile(r"^\s*([0-9.]+) ms SMTP < 250[ -].*queued as", re.MULTILINE)
_DETECTION = re.compile(r"\((IDLE push|polling), (\d+) checks\)")
_IMAP_LINE = re.compile(r"^\s*([0-9.]+) ms IMAP ([<>]) (\S+) (.*)$")
_IMPORT_LINE = re.compile(r"^import time:\s*(\d+) \|\s*(\d+) \|( *)(\S.*)$")


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Figures and the table
# --------------------------------------------------------------------------------------------


@dataclass
class Figure:
    section: str
    key: str
    label: str
    unit: str
    values: List[float] = field(default_factory=list)
    limit: Optional[float] = None  # PASS when the median is <= limit
    shown: Optional[str] = None  # a text instead of median/min/max (e.g. "140/140")
    passed: Optional[bool] = None  # for `shown` figures with a target
    target_text: str = ""

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.values) if self.values else None

    @property
    def result(self) -> str:
        if self.passed is not None:
            return "PASS" if self.passed else "MISS"
        if self.limit is None:
            return ""
        median = self.median
        if median is None:
            return "n/a"
        return "PASS" if median <= self.limit else "MISS"

    @property
    def target(self) -> str:
        if self.target_text:
            return self.target_text
        if self.limit is None:
            return ""
        return f"<= {self.limit:g} {self.unit}".rstrip()

    def cells(self) -> List[str]:
        if self.shown is not None:
            return [self.shown, "", ""]
        if not self.values:
            return ["n/a", "", ""]
        if len(self.values) == 1:  # e.g. a ratio of two medians
            return [_num(self.values[0]), "", ""]
        return [_num(self.median), _num(min(self.values)), _num(max(self.values))]

    def as_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"section": self.section, "label": self.label, "unit": self.unit}
        if self.shown is not None:
            data["value"] = self.shown
        if self.values:
            data.update(
                median=round(statistics.median(self.values), 3),
                min=round(min(self.values), 3),
                max=round(max(self.values), 3),
                n=len(self.values),
                values=[round(v, 3) for v in self.values],
            )
        if self.target:
            data["target"] = self.target
            data["result"] = self.result
        return data


def _num(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Results:
    def __init__(self) -> None:
        self.figures: List[Figure] = []
        self.notes: Dict[str, List[str]] = {}
        self.meta: Dict[str, Any] = {}

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def stat(
        self, section: str, key: str, label: str, unit: str, values: Sequence[float], limit: Optional[float] = None
    ) -> Figure:
        return self.add(Figure(section, key, label, unit, [float(v) for v in values], limit))

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        progress(f"{section}: {text}")

    def table(self) -> str:
        head = ["figure", "unit", "median", "min", "max", "target", "result"]
        rows: List[List[str]] = []
        sections: List[str] = []
        for fig in self.figures:
            if fig.section not in sections:
                sections.append(fig.section)
        for section in list(self.notes):
            if section not in sections:
                sections.append(section)
        lines: List[str] = []
        width = [len(h) for h in head]
        per_section: Dict[str, List[List[str]]] = {}
        for fig in self.figures:
            row = [fig.label, fig.unit, *fig.cells(), fig.target, fig.result]
            per_section.setdefault(fig.section, []).append(row)
            rows.append(row)
        for row in rows:
            width = [max(w, len(c)) for w, c in zip(width, row)]

        def fmt(row: List[str]) -> str:
            left = row[0].ljust(width[0])
            unit = row[1].ljust(width[1])
            nums = "  ".join(c.rjust(w) for c, w in zip(row[2:5], width[2:5]))
            return f"{left}  {unit}  {nums}  {row[5].ljust(width[5])}  {row[6]}".rstrip()

        lines.append(fmt(head))
        lines.append("-" * len(fmt(head)))
        for section in sections:
            lines.append(f"[{section}]")
            lines.extend(fmt(row) for row in per_section.get(section, []))
            for text in self.notes.get(section, []):
                lines.append(f"  - {text}")
        return "\n".join(lines)

    def as_json(self) -> Dict[str, Any]:
        return {
            "figures": {fig.key: fig.as_json() for fig in self.figures},
            "notes": self.notes,
            "meta": self.meta,
        }


# --------------------------------------------------------------------------------------------
# Child processes: spawn, reap with os.wait4 (wall time and peak RSS), bounded in time
# --------------------------------------------------------------------------------------------


@dataclass
class Proc:
    argv: List[str]
    started: float  # time.monotonic() just before the spawn
    ended: float  # time.monotonic() right after os.wait4 returned
    returncode: int
    maxrss_kib: int
    stdout: str
    stderr: str
    killed: bool = False
    rss_floor_kib: int = 0  # the spawner's own peak: ru_maxrss cannot read lower than this

    @property
    def wall_ms(self) -> float:
        return (self.ended - self.started) * 1000.0


# A direct child of this process would not show its own peak RSS: exec() records the old address
# space's high-water mark in the process's ru_maxrss, and (v)fork gives the child this process's,
# which is bigger than the sensor's.  Measured runs therefore start from a minimal interpreter
# (python -S -I) that spawns the command itself and writes down what os.wait4 said.  Its own peak
# (VmHWM, about 8 MiB) is the floor no reading can go below; the bench prints it.
_SPAWNER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.monotonic()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
ended = time.monotonic()
floor = 0
with open("/proc/self/status") as handle:
    for line in handle:
        if line.startswith("VmHWM:"):
            floor = int(line.split()[1])
with open(report, "w") as handle:
    handle.write("%r %r %d %d %d" % (started, ended, status, usage.ru_maxrss, floor))
"""


class _Child:
    """One command, started now and reaped by a thread (os.wait4); optionally through the spawner."""

    def __init__(self, argv: List[str], env: Dict[str, str], spawner: Optional[str] = None):
        self.argv = argv
        self.report: Optional[str] = None
        launch = argv
        if spawner:
            fd, self.report = tempfile.mkstemp(prefix="prtg-bench-", suffix=".spawn")
            os.close(fd)
            launch = [spawner, "-S", "-I", "-c", _SPAWNER, self.report, *argv]
        self.out: IO[bytes] = tempfile.TemporaryFile()
        self.err: IO[bytes] = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(launch, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err,
                                     cwd=str(ROOT), env=env, start_new_session=bool(spawner))
        self.ended = 0.0
        self.maxrss = 0
        self.floor = 0
        self.killed = False
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.ended = time.monotonic()
        self.maxrss = int(usage.ru_maxrss)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen

    def kill(self) -> None:
        if not self.thread.is_alive():
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            if self.report:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the spawner's own group: it and its command
            else:
                os.kill(self.proc.pid, signal.SIGKILL)

    def result(self) -> Proc:
        texts = []
        for handle in (self.out, self.err):
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", "replace"))
            handle.close()
        code = self.proc.returncode if self.proc.returncode is not None else -1
        started, ended, maxrss = self.started, self.ended or time.monotonic(), self.maxrss
        if self.report:
            try:
                with open(self.report) as report:
                    fields = report.read().split()
                started, ended = float(fields[0]), float(fields[1])
                code = os.waitstatus_to_exitcode(int(fields[2]))
                maxrss, self.floor = int(fields[3]), int(fields[4])
            except (OSError, ValueError, IndexError):
                code = code or -1  # the spawner failed (its traceback is in stderr)
                maxrss = 0
            with contextlib.suppress(OSError):
                os.unlink(self.report)
        return Proc(self.argv, started, ended, code, maxrss, texts[0], texts[1], self.killed, self.floor)


def run_processes(argvs: Sequence[List[str]], env: Dict[str, str], spawner: Optional[str] = None,
                  timeout: float = RUN_TIMEOUT) -> List[Proc]:
    """Start all commands at once (one right after the other), wait for all, at most `timeout`."""
    children = [_Child(list(argv), env, spawner) for argv in argvs]
    deadline = time.monotonic() + timeout
    for child in children:
        child.thread.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.thread.is_alive():
            child.kill()
            child.thread.join(10.0)
    return [child.result() for child in children]


# --------------------------------------------------------------------------------------------
# What a sensor run printed
# --------------------------------------------------------------------------------------------


@dataclass
class Doc:
    error: bool
    text: str
    channels: Dict[str, float]


def parse_document(stdout: str) -> Optional[Doc]:
    """A PRTG JSON or XML document (what the sensor prints), or None."""
    text = stdout.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        prtg = data.get("prtg") if isinstance(data, dict) else None
        if not isinstance(prtg, dict):
            return None
        channels: Dict[str, float] = {}
        for result in prtg.get("result") or []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                channels[str(result["channel"])] = float(result["value"])
        return Doc(str(prtg.get("error", 0)) == "1", str(prtg.get("text", "")), channels)
    if text.startswith("<"):
        try:
            from defusedxml import ElementTree
        except ImportError:  # the bench's own interpreter lacks the project's dependencies
            return None

        try:
            root = ElementTree.fromstring(text.encode("utf-8"))
        except (SyntaxError, ValueError):
            return None
        if root.tag != "prtg":
            return None
        channels = {}
        for result in root.findall("result"):
            with contextlib.suppress(TypeError, ValueError):
                channels[str(result.findtext("channel"))] = float(result.findtext("value") or "")
        return Doc((root.findtext("error") or "0").strip() == "1", root.findtext("text") or "", channels)
    return None


@dataclass
class SensorRun:
    proc: Proc
    doc: Optional[Doc]

    @property
    def ok(self) -> bool:
        doc = self.doc
        return self.proc.returncode == 0 and doc is not None and not doc.error and "Total" in doc.channels

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
    def problem(self) -> str:
        if self.doc is None:
            return f"exit {self.proc.returncode}, no document: {(self.proc.stdout + self.proc.stderr)[-300:]!r}"
        return f"exit {self.proc.returncode}: {self.doc.text[:300]}"

    @property
    def detection(self) -> str:
        match = _DETECTION.search(self.doc.text if self.doc else "")
        return match.group(1) if match else "?"

    def accepted_at(self) -> Optional[float]:
        """The SMTP 250 after DATA on the system-wide monotonic clock (needs --verbose)."""
        origin = _ORIGIN.search(self.proc.stderr)
        accepted = _ACCEPTED.search(self.proc.stderr)
        if not origin or not accepted:
            return None
        return float(origin.group(1)) + float(accepted.group(1)) / 1000.0

    def imap_session(self) -> Optional[Tuple[float, float]]:
        """From IMAP connect to the last IMAP line, on the monotonic clock (needs --verbose)."""
        origin = _ORIGIN.search(self.proc.stderr)
        stamps = [float(m.group(1)) for m in re.finditer(r"^\s*([0-9.]+) ms IMAP ", self.proc.stderr, re.MULTILINE)]
        if not origin or not stamps:
            return None
        base = float(origin.group(1))
        return base + stamps[0] / 1000.0, base + stamps[-1] / 1000.0

    def command_times(self) -> Dict[str, List[float]]:
        """Milliseconds from each IMAP command to its tagged answer, by command name."""
        sent: Dict[str, Tuple[str, float]] = {}
        times: Dict[str, List[float]] = {}
        for line in self.proc.stderr.splitlines():
            match = _IMAP_LINE.match(line)
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


# --------------------------------------------------------------------------------------------
# Watching the Maildir: inotify through ctypes, in a thread
# --------------------------------------------------------------------------------------------


class MaildirWatch:
    """Records time.monotonic() whenever a file appears in DIR/new (IN_CREATE, IN_MOVED_TO)."""

    def __init__(self, maildir: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        path = str(maildir / "new").encode()
        if int(libc.inotify_add_watch(self.fd, path, IN_CREATE | IN_MOVED_TO)) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify_add_watch {path!r}: {os.strerror(err)}")
        self.events: List[Tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        end = time.monotonic() + MAX_WATCH_SECONDS
        while not self._stop.is_set() and time.monotonic() < end:
            if not poller.poll(100):
                continue
            seen = time.monotonic()
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, _, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                with self._lock:
                    self.events.append((seen, name.decode("utf-8", "replace")))

    def between(self, start: float, end: float) -> List[float]:
        with self._lock:
            return [t for t, _ in self.events if start <= t <= end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


# --------------------------------------------------------------------------------------------
# A store-and-forward SMTP relay that delays delivery (to get the sensor into IDLE / slow polling)
# --------------------------------------------------------------------------------------------


class _RelayHandler(socketserver.StreamRequestHandler):
    timeout = 30
    server: DelayRelay

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reply("220 bench-relay ESMTP store-and-forward (delays delivery)")
        sender = ""
        recipients: List[str] = []
        for _ in range(200):  # commands in one session, at most
            line = self.rfile.readline(2048)
            if not line:
                return
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply("250-bench-relay" if verb == b"EHLO" else "250 bench-relay")
                if verb == b"EHLO":
                    self.reply("250 8BITMIME")
            elif verb == b"MAIL":
                sender = _angle(line)
                recipients = []
                self.reply("250 2.1.0 Ok")
            elif verb == b"RCPT":
                recipients.append(_angle(line))
                self.reply("250 2.1.5 Ok")
            elif verb == b"DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                queue_id = self.server.forward_later(sender, list(recipients), data)
                self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
            elif verb in (b"RSET", b"NOOP"):
                self.reply("250 2.0.0 Ok")
            elif verb == b"QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not implemented")

    def _read_data(self) -> Optional[bytes]:
        lines: List[bytes] = []
        for _ in range(1_000_000):
            line = self.rfile.readline(65536)
            if not line:
                return None
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)
        return None


def _angle(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return text[text.find("<") + 1: text.rfind(">")] if "<" in text else text.split(":", 1)[-1].strip()


class DelayRelay(socketserver.ThreadingTCPServer):
    """Answers 250 at once; hands the mail to Postfix `delay` seconds later."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, target: Tuple[str, int], delay: float):
        super().__init__(("127.0.0.1", port), _RelayHandler)
        self.target = target
        self.delay = delay
        self.count = 0
        self.failures: List[str] = []
        self._timers: List[threading.Timer] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def forward_later(self, sender: str, recipients: List[str], data: bytes) -> str:
        with self._lock:
            self.count += 1
            queue_id = f"BENCH{self.count}"
            timer = threading.Timer(self.delay, self._forward, (sender, recipients, data))
            timer.daemon = True
            self._timers.append(timer)
        timer.start()
        return queue_id

    def _forward(self, sender: str, recipients: List[str], data: bytes) -> None:
        try:
            with smtplib.SMTP(self.target[0], self.target[1], timeout=15) as smtp:
                smtp.sendmail(sender, recipients, data)
        except (OSError, smtplib.SMTPException) as exc:
            with self._lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.join(self.delay + 20.0)


# --------------------------------------------------------------------------------------------
# The stack and the sensor's command lines
# --------------------------------------------------------------------------------------------


def load_mailstack() -> Any:
    spec = importlib.util.spec_from_file_location("bench_mailstack", ROOT / "tools" / "mailstack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Bench:
    def __init__(self, args: argparse.Namespace, info: Dict[str, Any], results: Results):
        self.args = args
        self.info = info
        self.results = results
        self.python: str = args.python
        self.runs: int = args.runs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
        self.host: str = str(info["host"])
        self.rss_floor_kib = 0

    def port(self, name: str) -> int:
        return int(self.info["ports"][name]["port"])

    def user(self, name: str) -> Dict[str, str]:
        return dict(self.info["users"][name])

    def maildir(self, name: str) -> Path:
        return Path(self.info["maildir"][name])

    def sensor_argv(
        self,
        user: str = "probe",
        tls: bool = False,
        wait: str = "auto",
        search: str = "server",
        verbose: bool = False,
        smtp_port: Optional[int] = None,
        extra: Sequence[str] = (),
    ) -> List[str]:
        u = self.user(user)
        argv = [
            self.python, "-m", "prtg_roundtrip",
            "--smtp-host", self.host,
            "--smtp-port", str(smtp_port or self.port("smtp_starttls" if tls else "smtp_plain")),
            "--smtp-tls", "starttls" if tls else "off",
            "--imap-host", self.host,
            "--imap-port", str(self.port("imap_starttls" if tls else "imap_plain")),
            "--imap-tls", "starttls" if tls else "off",
            "--imap-user", u["login"], "--imap-password", u["password"],
            "--from", self.user("sender")["address"], "--to", u["address"],
            "--helo", "bench.roundtrip.test",
            "--wait", wait, "--search", search,
            "--timeout", SENSOR_TIMEOUT, "--max-trip-time", "20",
            "--format", "prtg-json",
        ]  # fmt: skip
        if tls:
            argv += ["--ca-file", str(self.info["ca_file"])]
        if verbose:
            argv.append("--verbose")
        return argv + list(extra)

    def run(self, argv: List[str]) -> Proc:
        """One process through the spawner (true peak RSS), waited for at most RUN_TIMEOUT."""
        proc = run_processes([argv], self.env, spawner=self.python)[0]
        self.rss_floor_kib = max(self.rss_floor_kib, proc.rss_floor_kib)
        return proc

    def sensor(self, argv: List[str]) -> SensorRun:
        proc = self.run(argv)
        return SensorRun(proc, parse_document(proc.stdout))

    def sensors(self, argvs: Sequence[List[str]]) -> List[SensorRun]:
        """Started directly, all at once (their RSS readings are not used: see _SPAWNER)."""
        return [SensorRun(proc, parse_document(proc.stdout)) for proc in run_processes(argvs, self.env)]

    def must(self, run: SensorRun, what: str) -> SensorRun:
        if not run.ok:
            raise BenchError(f"{what}: the sensor failed: {run.problem}")
        return run

    # -- IMAP housekeeping (stdlib imaplib, plain port) ---------------------------------------
    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4]:
        u = self.user(user)
        conn = imaplib.IMAP4(self.host, self.port("imap_plain"), timeout=120)
        try:
            conn.login(u["login"], u["password"])
            yield conn
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def message_count(self, user: str) -> int:
        with self.imap(user) as conn:
            _, data = conn.select("INBOX")
            return int(data[0] or b"0")

    def clear_inbox(self, user: str) -> int:
        """Expunge everything in the user's INBOX (the bench's own stack); the number removed."""
        with self.imap(user) as conn:
            _, data = conn.select("INBOX")
            count = int(data[0] or b"0")
            if count:
                conn.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                conn.expunge()
            return count


class BenchError(RuntimeError):
    pass


def _median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _ratio(top: Sequence[float], bottom: Sequence[float]) -> Optional[float]:
    a, b = _median(top), _median(bottom)
    if a is None or b is None or b <= 0:
        return None
    return a / b


# --------------------------------------------------------------------------------------------
# 1. Detection lag
# --------------------------------------------------------------------------------------------


def bench_lag(b: Bench) -> None:
    r = b.results
    watch = MaildirWatch(b.maildir("probe"))
    try:
        b.must(b.sensor(b.sensor_argv(verbose=True)), "lag warm-up")
        _lag_series(b, watch, "", None)
        delay = float(b.args.relay_delay)
        if delay > 0:
            relay_port = b.args.relay_port or b.args.port_base + RELAY_OFFSET
            relay = DelayRelay(relay_port, (b.host, b.port("smtp_plain")), delay)
            try:
                _lag_series(b, watch, "delayed", relay_port)
                if relay.failures:
                    r.note("lag", f"relay forwarding failures: {relay.failures[:3]}")
            finally:
                relay.close()
    finally:
        watch.close()


def delivery_and_lag(run: SensorRun, watch: MaildirWatch) -> Optional[Tuple[float, float]]:
    """(delivery, detection lag) in ms: accepted -> file in new/, and IMAP channel - delivery.

    None unless the run's transcript names the acceptance and exactly one file appeared in the
    watched new/ while the process ran.
    """
    accepted = run.accepted_at()
    seen = watch.between(run.proc.started, run.proc.ended)
    if accepted is None or len(seen) != 1:
        return None
    delivery = (seen[0] - accepted) * 1000.0
    return delivery, run.imap_ms - delivery


def _lag_series(b: Bench, watch: MaildirWatch, variant: str, relay_port: Optional[int]) -> None:
    r = b.results
    lags: Dict[str, List[float]] = {"auto": [], "poll": []}
    deliveries: Dict[str, List[float]] = {"auto": [], "poll": []}
    imap: Dict[str, List[float]] = {"auto": [], "poll": []}
    detections: Dict[str, Dict[str, int]] = {"auto": {}, "poll": {}}
    unmatched = 0
    for i in range(b.runs):
        for wait in ("auto", "poll"):
            progress(f"lag{' ' + variant if variant else ''}: run {i + 1}/{b.runs} --wait {wait}")
            run = b.must(b.sensor(b.sensor_argv(wait=wait, verbose=True, smtp_port=relay_port)), f"lag {wait}")
            measured = delivery_and_lag(run, watch)
            if measured is None:
                unmatched += 1
                continue
            deliveries[wait].append(measured[0])
            imap[wait].append(run.imap_ms)
            lags[wait].append(measured[1])
            counts = detections[wait]
            counts[run.detection] = counts.get(run.detection, 0) + 1
    name = "lag" if not variant else "lag-delayed"
    suffix = f" (delivery delayed {b.args.relay_delay:g} s by the relay)" if variant else ""
    for wait in ("auto", "poll"):
        mode = "--wait auto (IDLE available)" if wait == "auto" else "--wait poll"
        r.stat("lag", f"{name}.{wait}.detection_lag_ms", f"detection lag, {mode}{suffix}", "ms", lags[wait],
               LAG_TARGET_MS)
    for wait in ("auto", "poll"):
        r.stat("lag", f"{name}.{wait}.delivery_ms", f"  delivery (accepted -> file in new/), --wait {wait}", "ms",
               deliveries[wait])
        r.stat("lag", f"{name}.{wait}.imap_ms", f"  Response Time (IMAP) channel, --wait {wait}", "ms", imap[wait])
    how = "; ".join(
        f"--wait {w}: " + ", ".join(f"{n}x {k}" for k, n in sorted(detections[w].items())) for w in ("auto", "poll")
    )
    r.note("lag", f"{name}: what saw the probe{suffix}: {how}")
    if unmatched:
        r.note("lag", f"{name}: {unmatched} run(s) without exactly one delivery event in the run's window, left out")


# --------------------------------------------------------------------------------------------
# 2. Overhead, peak RSS, import time
# --------------------------------------------------------------------------------------------


def bench_overhead(b: Bench) -> None:
    r = b.results
    for tls in (False, True):
        label = "TLS (STARTTLS both legs, --ca-file)" if tls else "plain text"
        key = "tls" if tls else "plain"
        b.must(b.sensor(b.sensor_argv(tls=tls)), f"overhead warm-up ({label})")
        overhead, rss, wall, total = [], [], [], []
        parts: Dict[str, List[float]] = {}
        for i in range(b.runs):
            progress(f"overhead: run {i + 1}/{b.runs} {label}")
            run = b.must(b.sensor(b.sensor_argv(tls=tls)), f"overhead {label}")
            overhead.append(run.proc.wall_ms - run.total)
            rss.append(run.proc.maxrss_kib / 1024.0)
            wall.append(run.proc.wall_ms)
            total.append(run.total)
            # The same run with --verbose: its transcript splits the overhead into phases.
            verbose = b.must(b.sensor(b.sensor_argv(tls=tls, verbose=True)), f"overhead {label} --verbose")
            for name, value in _overhead_parts(verbose).items():
                parts.setdefault(name, []).append(value)
        r.stat("overhead", f"overhead.{key}.overhead_ms", f"overhead = wall - Total, {label}", "ms", overhead,
               OVERHEAD_TARGET_MS)
        r.stat("overhead", f"overhead.{key}.peak_rss_mib", f"peak RSS, {label}", "MiB", rss, RSS_TARGET_MIB)
        r.stat("overhead", f"overhead.{key}.wall_ms", f"  process wall time, {label}", "ms", wall)
        r.stat("overhead", f"overhead.{key}.total_ms", f"  Total channel, {label}", "ms", total)
        for name, text in OVERHEAD_PARTS:
            r.stat("overhead", f"overhead.{key}.part.{name}_ms", f"    {text} (--verbose runs)", "ms",
                   parts.get(name, []))

    refused = ["--format", "prtg-json", "--smtp-port", "not-a-port"]
    for key, label, extra in (("help", "--help", ["--help"]), ("refused", "a refused parameter", refused)):
        argv = [b.python, "-m", "prtg_roundtrip", *extra]
        b.run(argv)  # warm-up
        procs = []
        for i in range(b.runs):
            progress(f"overhead: run {i + 1}/{b.runs} {label}")
            procs.append(b.run(argv))
        if key == "refused":
            docs = [parse_document(p.stdout) for p in procs]
            if not all(d is not None and d.error for d in docs):
                r.note("overhead", "the refused parameter did not always give an error document")
        r.stat("overhead", f"overhead.{key}.wall_ms", f"  process wall time, {label}", "ms", [p.wall_ms for p in procs])
        r.stat("overhead", f"overhead.{key}.peak_rss_mib", f"  peak RSS, {label}", "MiB",
               [p.maxrss_kib / 1024.0 for p in procs])
    for key, label, extra in (
        ("help", "--help", ["--help"]),
        ("refused", "a refused parameter", refused),
        ("run", "a plain-text round trip", b.sensor_argv()[3:]),
    ):
        _import_times(b, key, label, [b.python, "-X", "importtime", "-m", "prtg_roundtrip", *extra])
    r.note("overhead", f"peak RSS is ru_maxrss from os.wait4 in a minimal spawner; its own peak, "
           f"{b.rss_floor_kib / 1024:.1f} MiB, is the lowest value a reading can show")


OVERHEAD_PARTS = (
    ("startup", "spawn -> transcript origin: interpreter, imports, options"),
    ("arm", "origin -> SMTP connect: IMAP connect, login, SELECT"),
    ("after", "found -> last transcript line: delete, sweep, LOGOUT"),
    ("exit", "last line -> exit: render (jinja2), interpreter exit"),
)


def _overhead_parts(run: SensorRun) -> Dict[str, float]:
    """Where the wall time outside Total goes, from a --verbose run's transcript."""
    origin = _ORIGIN.search(run.proc.stderr)
    accepted = _ACCEPTED.search(run.proc.stderr)
    connect = re.search(r"^\s*([0-9.]+) ms SMTP \* connecting", run.proc.stderr, re.MULTILINE)
    stamps = [float(m.group(1)) for m in re.finditer(r"^\s*([0-9.]+) ms ", run.proc.stderr, re.MULTILINE)]
    if not (origin and accepted and connect and stamps):
        return {}
    start = float(origin.group(1))
    found_ms = float(accepted.group(1)) + run.imap_ms
    return {
        "startup": (start - run.proc.started) * 1000.0,
        "arm": float(connect.group(1)),
        "after": stamps[-1] - found_ms,
        "exit": (run.proc.ended - start) * 1000.0 - stamps[-1],
    }


@dataclass
class _Import:
    name: str
    cumulative_us: int
    level: int
    children: List[_Import]


def parse_importtime(stderr: str) -> List[_Import]:
    """The top-level imports of `python -X importtime`, each with its children (a tree)."""
    pending: Dict[int, List[_Import]] = {}
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        level = (len(match.group(3)) - 1) // 2
        node = _Import(match.group(4).strip(), int(match.group(2)), level, pending.pop(level + 1, []))
        pending.setdefault(level, []).append(node)
    return pending.get(0, [])


def _first_foreign(nodes: List[_Import]) -> Iterator[_Import]:
    """Below the project's modules: the first import of each chain that is not the project's."""
    for node in nodes:
        if node.name.startswith("prtg_roundtrip"):
            yield from _first_foreign(node.children)
        else:
            yield node


def _import_times(b: Bench, key: str, label: str, argv: List[str]) -> None:
    r = b.results
    samples = []
    for _ in range(b.runs):
        roots = parse_importtime(b.run(argv).stderr)
        if roots:
            samples.append(roots)
    if not samples:
        r.note("overhead", f"-X importtime of {label}: no output")
        return
    totals = [sum(n.cumulative_us for n in roots) / 1000.0 for roots in samples]
    ours = [sum(n.cumulative_us for n in roots if n.name.startswith("prtg_roundtrip")) / 1000.0 for roots in samples]
    r.stat("overhead", f"importtime.{key}.all_ms", f"  -X importtime {label}: all imports", "ms", totals)
    r.stat("overhead", f"importtime.{key}.prtg_roundtrip_ms", f"  -X importtime {label}: prtg_roundtrip*", "ms", ours)
    middle = sorted(range(len(samples)), key=lambda i: totals[i])[len(samples) // 2]
    roots = samples[middle]
    top = sorted(roots, key=lambda n: -n.cumulative_us)[:5]
    inside = sorted(_first_foreign([n for n in roots if n.name.startswith("prtg_roundtrip")]),
                    key=lambda n: -n.cumulative_us)[:6]
    r.note("overhead", f"importtime {label} (median run), top level: "
           + ", ".join(f"{n.name} {n.cumulative_us / 1000:.1f}" for n in top) + " ms")
    r.note("overhead", f"importtime {label}, heaviest imports under prtg_roundtrip: "
           + (", ".join(f"{n.name} {n.cumulative_us / 1000:.1f}" for n in inside) or "none") + " ms")


# --------------------------------------------------------------------------------------------
# 3. A mailbox of 50,000 messages
# --------------------------------------------------------------------------------------------


def _filler_files(maildir: Path) -> Iterator[Path]:
    for sub in ("cur", "new"):
        directory = maildir / sub
        with os.scandir(directory) as entries:
            for entry in entries:
                if FILLER_MARK in entry.name:
                    yield directory / entry.name


def fill_maildir(maildir: Path, count: int) -> float:
    """Write `count` messages into maildir/cur as the Maildir's owner; the seconds it took."""
    cur = maildir / "cur"
    owner = os.stat(cur)
    started = time.monotonic()
    stamp = int(time.time()) - 86400
    run_id = uuid.uuid4().hex[:12]
    for i in range(count):
        body = (
            f"From: filler <sender@roundtrip.test>\n"
            f"To: other@roundtrip.test\n"
            f"Subject: bench filler message {i}\n"
            f"Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
            f"Message-ID: <{run_id}.{i}.{FILLER_MARK}@roundtrip.test>\n"
            f"\n"
            f"Filler message {i} of {count}, written straight into the Maildir by tools/bench.py.\n"
        ).encode()
        vsize = len(body) + body.count(b"\n")  # the size with CRLF line ends, as IMAP counts it
        name = f"{stamp}.M{i}P{os.getpid()}.{FILLER_MARK},S={len(body)},W={vsize}:2,"
        fd = os.open(cur / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
    return time.monotonic() - started


def remove_fillers(b: Bench, user: str) -> Tuple[int, float]:
    """Delete the filler files and let Dovecot resync; (files removed, seconds)."""
    started = time.monotonic()
    removed = 0
    for path in list(_filler_files(b.maildir(user))):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        with b.imap(user) as conn:
            conn.select("INBOX")
            conn.noop()
    return removed, time.monotonic() - started


@dataclass
class _Measured:
    run: SensorRun
    delivery_ms: Optional[float]
    lag_ms: Optional[float]


def bench_bigmailbox(b: Bench) -> None:
    r = b.results
    count = int(b.args.messages)
    stale, _ = remove_fillers(b, "other")
    if stale:
        r.note("bigmailbox", f"removed {stale} filler messages left by an earlier, interrupted bench")
    for user in ("probe", "other"):
        left = b.clear_inbox(user)
        if left:
            r.note("bigmailbox", f"{user}'s INBOX held {left} message(s) before the test: expunged")
    searches = ("server", "local")
    users = ("probe", "other")
    watches = {user: MaildirWatch(b.maildir(user)) for user in users}

    def series(phase: str) -> Dict[Tuple[str, str], List[_Measured]]:
        runs: Dict[Tuple[str, str], List[_Measured]] = {}
        for search in searches:
            for user in users:
                b.must(b.sensor(b.sensor_argv(user=user, search=search, verbose=True)), f"{phase} warm-up")
        for i in range(b.runs):
            for search in searches:
                for user in users:
                    progress(f"bigmailbox {phase}: run {i + 1}/{b.runs} --search {search} user {user}")
                    run = b.must(b.sensor(b.sensor_argv(user=user, search=search, verbose=True)), phase)
                    measured = delivery_and_lag(run, watches[user])
                    runs.setdefault((search, user), []).append(
                        _Measured(run, *(measured if measured else (None, None)))
                    )
        return runs

    try:
        empty = series("both empty")
        try:
            progress(f"bigmailbox: writing {count} messages into other's Maildir/cur")
            seconds = fill_maildir(b.maildir("other"), count)
            r.note("bigmailbox", f"wrote {count} Maildir files in {seconds:.1f} s")
            started = time.monotonic()
            with b.imap("other") as conn:
                _, data = conn.select("INBOX")
                selected = time.monotonic()
                conn.fetch("1:*", "(FLAGS)")
            exists = int(data[0] or b"0")
            r.note("bigmailbox", f"warm-up client (untimed for the figures): SELECT saw {exists} messages in "
                   f"{selected - started:.2f} s, FETCH 1:* (FLAGS) {time.monotonic() - selected:.2f} s")
            if exists < count:
                raise BenchError(f"Dovecot sees {exists} messages, not {count}")
            full = series("other full")
        finally:
            removed, seconds = remove_fillers(b, "other")
            left = b.message_count("other")
            r.note("bigmailbox", f"cleanup: deleted {removed} files, Dovecot resynced in {seconds:.1f} s; "
                   f"other's INBOX now holds {left} message(s)")
    finally:
        for watch in watches.values():
            watch.close()

    def totals(runs: List[_Measured]) -> List[float]:
        return [m.run.total for m in runs]

    def known(values: Sequence[Optional[float]]) -> List[float]:
        return [v for v in values if v is not None]

    for search in searches:
        ratio = _ratio(totals(empty[(search, "other")]), totals(empty[(search, "probe")]))
        r.stat("bigmailbox", f"bigmailbox.{search}.calibration_ratio",
               f"  calibration, both empty: Total other / probe, --search {search}", "x",
               [ratio] if ratio is not None else [])
    for search in searches:
        small, big = full[(search, "probe")], full[(search, "other")]
        ratio = _ratio(totals(big), totals(small))
        fig = r.stat("bigmailbox", f"bigmailbox.{search}.total_ratio",
                     f"Total {count:,} messages / empty, --search {search}", "x",
                     [ratio] if ratio is not None else [], BIG_RATIO_TARGET)
        fig.target_text = f"<= {BIG_RATIO_TARGET:g}x"
        for runs, what in ((small, "empty INBOX"), (big, f"{count:,} messages")):
            tag = "empty" if runs is small else "full"
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.total_ms", f"  Total, {what}, --search {search}", "ms",
                   totals(runs))
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.delivery_ms",
                   f"    delivery (accepted -> file in new/), {what}", "ms", known([m.delivery_ms for m in runs]))
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.lag_ms", f"    detection lag, {what}", "ms",
                   known([m.lag_ms for m in runs]))
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.wall_ms", f"    process wall time, {what}", "ms",
                   [m.run.proc.wall_ms for m in runs])
        for runs, what in ((small, "empty"), (big, "full")):
            times: Dict[str, List[float]] = {}
            checks: List[float] = []
            for m in runs:
                for name, values in m.run.command_times().items():
                    times.setdefault(name, []).extend(values)
                match = _DETECTION.search(m.run.doc.text if m.run.doc else "")
                if match:
                    checks.append(float(match.group(2)))
            summary = ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in sorted(times.items()))
            r.note("bigmailbox", f"--search {search}, {what}: median checks {_num(_median(checks))}; "
                   f"median ms per IMAP command: {summary}")


# --------------------------------------------------------------------------------------------
# 4. Concurrent sensors
# --------------------------------------------------------------------------------------------


def bench_concurrent(b: Bench) -> None:
    r = b.results
    n = int(b.args.concurrency)
    argv = b.sensor_argv(verbose=True)  # the transcripts show how many IMAP sessions overlapped
    b.must(b.sensor(argv), "concurrent warm-up")
    lone = []
    for i in range(b.runs):
        progress(f"concurrent: lone run {i + 1}/{b.runs}")
        lone.append(b.must(b.sensor(argv), "lone run").total)
    totals: List[float] = []
    walls: List[float] = []
    peaks: List[float] = []
    failures: Dict[str, int] = {}
    started = 0
    for i in range(b.runs):
        progress(f"concurrent: round {i + 1}/{b.runs}, {n} sensors at once")
        runs = b.sensors([argv] * n)
        sessions = [s for s in (run.imap_session() for run in runs) if s is not None]
        peaks.append(float(_peak_overlap(sessions)))
        for run in runs:
            started += 1
            if run.ok:
                totals.append(run.total)
                walls.append(run.proc.wall_ms)
            else:
                failures[run.problem] = failures.get(run.problem, 0) + 1
    ok = len(totals)
    r.add(Figure("concurrent", "concurrent.succeeded", f"{n} sensors at once, {b.runs} rounds: succeeded", "runs",
                 shown=f"{ok}/{started}", passed=ok == started and started > 0, target_text="all"))
    r.stat("concurrent", "concurrent.total_ms", f"  Total, {n} at once", "ms", totals)
    r.stat("concurrent", "concurrent.lone_total_ms", "  Total, lone run", "ms", lone)
    ratio = _ratio(totals, lone)
    r.stat("concurrent", "concurrent.total_ratio", f"  median Total {n} at once / lone", "x",
           [ratio] if ratio is not None else [])
    r.stat("concurrent", "concurrent.wall_ms", f"  process wall time, {n} at once", "ms", walls)
    r.stat("concurrent", "concurrent.peak_imap_sessions", "  IMAP sessions open at the same time, peak per round",
           "count", peaks)
    for problem, count in sorted(failures.items(), key=lambda item: -item[1])[:5]:
        r.note("concurrent", f"{count}x failed: {problem}")
    left = b.message_count("probe")
    if left:
        r.note("concurrent", f"{left} message(s) left in probe's INBOX afterwards")


def _peak_overlap(intervals: Sequence[Tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


# --------------------------------------------------------------------------------------------
# 5. Side by side with another probe command
# --------------------------------------------------------------------------------------------


def bench_compare(b: Bench, template: str) -> None:
    r = b.results
    u = b.user("probe")
    values = {
        "smtp_host": b.host, "smtp_port": b.port("smtp_plain"),
        "imap_host": b.host, "imap_port": b.port("imap_plain"),
        "user": u["login"], "password": u["password"],
        "from": b.user("sender")["address"], "to": u["address"],
        "ca_file": b.info["ca_file"], "python": b.python,
        "smtp_starttls_port": b.port("smtp_starttls"), "imap_starttls_port": b.port("imap_starttls"),
        "smtps_port": b.port("smtps"), "imaps_port": b.port("imaps"), "submission_port": b.port("submission"),
    }  # fmt: skip
    try:
        other_argv = [word.format(**values) for word in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchError(f"--probe-command: cannot fill in {exc}") from None
    mine_argv = b.sensor_argv()
    b.must(b.sensor(mine_argv), "compare warm-up")
    b.run(other_argv)  # warm-up
    mine: List[SensorRun] = []
    other: List[SensorRun] = []
    for i in range(b.runs):
        progress(f"compare: run {i + 1}/{b.runs}")
        mine.append(b.must(b.sensor(mine_argv), "compare"))
        proc = b.run(other_argv)
        other.append(SensorRun(proc, parse_document(proc.stdout)))
    mine_wall = [run.proc.wall_ms for run in mine]
    other_wall = [run.proc.wall_ms for run in other]
    succeeded = [run for run in other if run.proc.returncode == 0 and not (run.doc and run.doc.error)]
    r.add(Figure("compare", "compare.other_succeeded", "other command: exit 0 and no error document", "runs",
                 shown=f"{len(succeeded)}/{len(other)}"))
    r.stat("compare", "compare.sensor_wall_ms", "  process wall time, this sensor", "ms", mine_wall)
    r.stat("compare", "compare.other_wall_ms", "  process wall time, other command", "ms", other_wall)
    ratio = _ratio(other_wall, mine_wall)
    r.stat("compare", "compare.wall_ratio", "wall time other / this sensor", "x", [ratio] if ratio is not None else [])
    other_total = [run.doc.channels["Total"] for run in other if run.doc and "Total" in run.doc.channels]
    if other_total:
        ratio = _ratio(other_total, [run.total for run in mine])
        r.stat("compare", "compare.total_ratio", "Total other / this sensor", "x", [ratio] if ratio is not None else [])
        r.stat("compare", "compare.sensor_total_ms", "  Total, this sensor", "ms", [run.total for run in mine])
        r.stat("compare", "compare.other_total_ms", "  Total, other command", "ms", other_total)
    else:
        r.note("compare", "the other command printed no PRTG document with a Total channel: wall times only")
    r.note("compare", f"other command: {shlex.join(other_argv).replace(u['password'], '***')}")
    left = b.clear_inbox("probe")
    if left:
        r.note("compare", f"{left} message(s) left in probe's INBOX after the comparison: expunged")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark the round-trip sensor against the local mail stack "
                                "(see the top of tools/bench.py for what each figure means).")
    p.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--port-base", type=int, default=14000, help="mail stack port base (default 14000)")
    p.add_argument("--dir", help="mail stack directory (default /tmp/prtg-roundtrip-bench-PORTBASE)")
    p.add_argument("--keep-stack", action="store_true", help="leave the mail stack running at the end")
    p.add_argument("--probe-command", help="another probe command to compare with (a template, see the top)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the sensor (default: this one)")
    p.add_argument("--messages", type=int, default=50_000, help="messages in the big mailbox (default 50000)")
    p.add_argument("--concurrency", type=int, default=20, help="sensors started at once (default 20)")
    p.add_argument("--relay-delay", type=float, default=2.0,
                   help="seconds the relay holds mail for the delayed lag rows; 0 skips them (default 2)")
    p.add_argument("--relay-port", type=int, help="port of that relay (default port base + 99)")
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure at the end")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if not 1 <= args.runs <= 1000:
        p.error("--runs must be 1 to 1000")
    if not 1 <= args.concurrency <= 200:
        p.error("--concurrency must be 1 to 200")
    if not 0 <= args.messages <= 1_000_000:
        p.error("--messages must be 0 to 1000000")
    if not 0 <= args.relay_delay <= 60:
        p.error("--relay-delay must be 0 to 60 seconds")
    args.dir = args.dir or f"/tmp/prtg-roundtrip-bench-{args.port_base}"
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    bench_started = time.monotonic()
    args = parse_args(argv)
    # The inotify thread stamps deliveries; let it have the GIL within 0.5 ms, not 5 ms.
    sys.setswitchinterval(0.0005)
    results = Results()
    results.meta.update(
        runs=args.runs, sections=args.sections, port_base=args.port_base, dir=args.dir,
        python=args.python, bench_python=sys.version.split()[0], started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        cpus=os.cpu_count(),
    )  # fmt: skip
    probe_import = "import prtg_roundtrip, imapclient, jinja2; print(prtg_roundtrip.__version__)"
    check = subprocess.run([args.python, "-c", probe_import], cwd=str(ROOT), capture_output=True, text=True,
                           check=False, timeout=60)
    if check.returncode != 0:
        print(f"bench: {args.python} cannot import the sensor and its dependencies:\n{check.stderr}", file=sys.stderr)
        return 2
    results.meta["sensor_version"] = check.stdout.strip()
    mailstack = load_mailstack()
    stack = mailstack.MailStack(args.dir, args.port_base)
    created = not Path(args.dir).exists()
    status = 0
    sections: Dict[str, Callable[[Bench], None]] = {
        "lag": bench_lag, "overhead": bench_overhead, "concurrent": bench_concurrent, "bigmailbox": bench_bigmailbox,
    }  # fmt: skip
    try:
        progress(f"starting the mail stack in {args.dir} (port base {args.port_base})")
        info = stack.start()
        bench = Bench(args, info, results)
        for user in ("probe", "other"):
            left = bench.clear_inbox(user)
            if left:
                results.note("setup", f"{user}'s INBOX held {left} message(s) at the start: expunged")
        for name in ("lag", "overhead", "concurrent", "bigmailbox"):
            if name in args.sections:
                section_started = time.monotonic()
                sections[name](bench)
                results.meta[f"{name}_seconds"] = round(time.monotonic() - section_started, 1)
        if args.probe_command:
            bench_compare(bench, args.probe_command)
    except (BenchError, RuntimeError, OSError, imaplib.IMAP4.error) as exc:
        results.note("aborted", f"{type(exc).__name__}: {exc}")
        status = 1
    except KeyboardInterrupt:
        results.note("aborted", "interrupted")
        status = 130
    finally:
        if not args.keep_stack:
            progress("stopping the mail stack")
            stack.stop()
            if created:
                shutil.rmtree(args.dir, ignore_errors=True)
    wall = time.monotonic() - bench_started
    results.meta["wall_seconds"] = round(wall, 1)
    print(f"prtg-roundtrip benchmark: sensor {results.meta.get('sensor_version', '?')}, {args.python} "
          f"(Python {results.meta['bench_python']}), {args.runs} runs per figure, {os.cpu_count()} CPUs, "
          f"stack {args.dir} port base {args.port_base}")
    print(results.table())
    misses = [f.key for f in results.figures if f.result == "MISS"]
    print(f"targets: {sum(f.result == 'PASS' for f in results.figures)} PASS, {len(misses)} MISS"
          + (f" ({', '.join(misses)})" if misses else ""))
    print(f"benchmark wall time: {wall:.1f} s" + ("; mail stack left running" if args.keep_stack else ""))
    if args.json:
        print(json.dumps(results.as_json(), sort_keys=True))
    return status


if __name__ == "__main__":
    sys.exit(main())

"""tools/bench's pure pieces on fixed inputs (figures, the transcript and importtime parsers, the
reference client's message and joined writes), and its command line. No timing is asserted: the
bench prints figures, this only checks how it reads and judges them."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from bench import figures, parsers, procs, refclient, sensor, stack  # noqa: E402 - tools/ on the path first

TRANSCRIPT = """\
      0.1 ms RUN * clock origin 9623.650244 s (time.perf_counter)
      5.1 ms RUN * probe <5944d380@roundtrip.test>, subject 'PRTG Roundtrip Mail: {5944D380}', sensor cfg-1
     50.3 ms IMAP * connecting to 127.0.0.1:20993 with TLS
     88.8 ms IMAP > AUTHENTICATE PLAIN ***
     89.3 ms IMAP < +
    106.4 ms IMAP < NNJK1 OK Logged in
    106.6 ms IMAP > NNJK2 SELECT "INBOX"
    124.5 ms IMAP < NNJK2 OK [READ-WRITE] Select completed (0.017 + 0.000 + 0.016 secs).
    125.2 ms SMTP * connecting to 127.0.0.1:20587
    176.6 ms SMTP < 220 mail.roundtrip.test ESMTP prtg-roundtrip test stack
    191.4 ms SMTP > AUTH PLAIN ***
    196.2 ms SMTP < 235 2.7.0 Authentication successful
    219.0 ms SMTP > <message data, 741 bytes>
    220.4 ms SMTP < 250 2.0.0 Ok: queued as 115C121D910
    221.5 ms IMAP > NNJK3 NOOP
    222.9 ms IMAP < NNJK3 OK NOOP completed (0.001 + 0.000 secs).
    223.3 ms IMAP > NNJK4 UID SEARCH UID 1:* SUBJECT 5944D380
    227.7 ms IMAP < NNJK4 OK Search completed (0.001 + 0.000 secs).
    230.1 ms IMAP > NNJK5 NOOP
    230.5 ms IMAP < NNJK5 OK NOOP completed (0.001 + 0.000 secs).
    281.8 ms IMAP < * BYE Logging out
"""


def test_transcript_parsers() -> None:
    assert parsers.clock_origin(TRANSCRIPT) == pytest.approx(9623.650244)
    assert parsers.accepted_ms(TRANSCRIPT) == pytest.approx(220.4)
    assert parsers.smtp_connect_ms(TRANSCRIPT) == pytest.approx(125.2)
    assert parsers.message_size(TRANSCRIPT) == 741
    assert parsers.smtp_auth_mechanism(TRANSCRIPT) == "PLAIN"
    assert parsers.imap_login_command(TRANSCRIPT) == "AUTHENTICATE PLAIN"
    assert parsers.imap_span(TRANSCRIPT) == (pytest.approx(50.3), pytest.approx(281.8))
    assert parsers.stamps(TRANSCRIPT)[-1] == pytest.approx(281.8)
    times = parsers.command_times(TRANSCRIPT)
    assert times["NOOP"] == [pytest.approx(1.4), pytest.approx(0.4)]
    assert times["UID SEARCH"] == [pytest.approx(4.4)]
    assert times["SELECT"] == [pytest.approx(17.9)]


def test_transcript_parsers_without_the_lines() -> None:
    plain = "      3.0 ms IMAP > LOGIN ***\n      9.0 ms SMTP * connecting to 127.0.0.1:25\n"
    assert parsers.imap_login_command(plain) == "LOGIN"
    assert parsers.smtp_auth_mechanism(plain) is None
    assert parsers.message_size(plain) is None
    assert parsers.accepted_ms(plain) is None
    assert parsers.clock_origin(plain) is None
    assert parsers.imap_span("") is None


@pytest.mark.parametrize(
    "text, how, checks",
    [
        ("found it 3.1 ms later by server search (polling, 1 check) and deleted.", "polling", 1),
        ("found it 520.0 ms later by server search (IDLE push, 12 checks) and deleted.", "IDLE push", 12),
        ("SMTP error: refused", "?", None),
    ],
)
def test_detection_from_the_text(text: str, how: str, checks: object) -> None:
    assert parsers.detection(text) == how
    assert parsers.checks(text) == checks


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:       200 |        300 | io
import time:        50 |         50 |       jinja2.utils
import time:       400 |        450 |     jinja2
import time:        30 |         30 |     prtg_roundtrip.errors
import time:        70 |        550 |   prtg_roundtrip.cli
import time:        20 |        570 | prtg_roundtrip
"""


def test_importtime_tree() -> None:
    roots = parsers.parse_importtime(IMPORTTIME)
    assert [(n.name, n.cumulative_us) for n in roots] == [("io", 300), ("prtg_roundtrip", 570)]
    assert [n.name for n in roots[0].children] == ["_io"]
    cli = roots[1].children[0]
    assert cli.name == "prtg_roundtrip.cli"
    assert [(n.name, n.level) for n in cli.children] == [("jinja2", 2), ("prtg_roundtrip.errors", 2)]
    assert [n.name for n in cli.children[0].children] == ["jinja2.utils"]
    assert [n.name for n in parsers.first_foreign([roots[1]])] == ["jinja2"]


def test_figure_median_and_target() -> None:
    fig = figures.Figure("s", "k", "label", "ms", [5.0, 1.0, 3.0], limit=3.0)
    assert fig.median == 3.0
    assert fig.result == "PASS"
    assert fig.cells() == ["3.00", "1.00", "5.00"]
    assert fig.target == "<= 3 ms"
    assert figures.Figure("s", "k", "label", "ms", [4.0, 3.5, 9.0], limit=3.0).result == "MISS"
    assert figures.Figure("s", "k", "label", "ms", [], limit=3.0).result == "n/a"
    assert figures.Figure("s", "k", "label", "ms", [120.4]).cells() == ["120", "", ""]
    data = fig.as_json()
    assert (data["median"], data["min"], data["max"], data["n"], data["result"]) == (3.0, 1.0, 5.0, 3, "PASS")


@pytest.mark.parametrize(
    "sensor, reference, allowed, result",
    [
        ([8.0, 9.0, 10.0], [6.5, 7.0, 7.5], 3.0, "PASS"),  # 2 ms off, 3 ms allowed (20 % of 7 is less)
        ([11.0, 11.0], [7.0, 7.0], 3.0, "MISS"),  # 4 ms off
        ([3.0], [7.0], 3.0, "MISS"),  # faster by more than allowed is off too
        ([58.0], [50.0], 10.0, "PASS"),  # 20 % of 50
        ([61.0], [50.0], 10.0, "MISS"),
    ],
)
def test_difference_against_the_issue_target(sensor: List[float], reference: List[float], allowed: float,
                                             result: str) -> None:
    assert figures.allowed_difference(reference[len(reference) // 2]) == pytest.approx(allowed)
    fig = figures.difference_figure("paths", "k", "d", sensor, reference)
    assert fig.result == result
    assert fig.target == f"|d| <= {allowed:.1f} ms"
    assert fig.values == [pytest.approx(statistics.median(sensor) - statistics.median(reference))]


def test_difference_without_values_is_not_judged() -> None:
    assert figures.difference_figure("paths", "k", "d", [], [3.0]).result == "n/a"


def test_table_and_json() -> None:
    results = figures.Results()
    results.stat("lag", "lag.x", "detection lag", "ms", [1.0, 2.0, 3.0], 5.0)
    results.difference("paths", "paths.y", "sensor - reference", [10.0], [9.0])
    results.notes.setdefault("paths", []).append("a note")
    table = results.table().splitlines()
    assert table[0].split() == ["figure", "unit", "median", "min", "max", "target", "result"]
    assert "[lag]" in table and "[paths]" in table
    assert table.index("[lag]") < table.index("[paths]")
    assert any(line.startswith("detection lag") and line.endswith("PASS") for line in table)
    assert "  - a note" in table
    data = json.loads(json.dumps(results.as_json()))
    assert data["figures"]["paths.y"]["values"] == [1.0]
    assert data["figures"]["paths.y"]["result"] == "PASS"


def test_documents_are_read_by_check_output() -> None:
    doc, problems = sensor.parse_document(json.dumps({"prtg": {"result": [
        {"channel": "Total", "value": 8.5, "unit": "TimeResponse", "float": 1},
        {"channel": "IMAP Checks", "value": 3, "unit": "Count", "float": 0},
    ], "text": "Round trip 8.5 ms"}}))
    assert problems == []
    assert doc is not None and not doc.error
    assert doc.channels == {"Total": 8.5, "IMAP Checks": 3.0}
    error, _ = sensor.parse_document('{"prtg": {"error": 1, "text": "SMTP error: refused"}}')
    assert error is not None and error.error and error.text == "SMTP error: refused"
    refused, problems = sensor.parse_document('{"prtg": {"result": [{"channel": "Total", "value": 8.5}]}}')
    assert refused is None
    assert any("float=1" in p for p in problems)  # check_output's own rule, not a copy's


def test_reference_message_size() -> None:
    for size in [*range(300, 460), 741, 750, 2000]:  # every remainder of a 78-byte line
        data = refclient.message(size, "sender@roundtrip.test", "probe@roundtrip.test")
        assert len(data) == size
        assert data.endswith(b"\r\n") and b"\r\n\r\n" in data
        assert b"\n" not in data.replace(b"\r\n", b"")


class _Sock:
    def __init__(self) -> None:
        self.writes: List[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def test_tuned_imap_reference_joins_a_line_into_one_write() -> None:
    client = refclient.TunedIMAP4.__new__(refclient.TunedIMAP4)  # no connection: only send() is used
    client.sock = _Sock()  # type: ignore[assignment]
    for piece in (b"A001 AUTHENTICATE PLAIN\r\n", b"AHVzZXIAcHc=", b"\r\n", b"A002 SELECT INBOX", b"\r\n"):
        client.send(piece)
    assert client.sock.writes == [b"A001 AUTHENTICATE PLAIN\r\n", b"AHVzZXIAcHc=\r\n",  # type: ignore[attr-defined]
                                  b"A002 SELECT INBOX\r\n"]


def test_plain_imap_reference_keeps_imaplib_writes() -> None:
    client = refclient.imaplib.IMAP4.__new__(refclient.imaplib.IMAP4)
    client.sock = _Sock()  # type: ignore[assignment]
    for piece in (b"AHVzZXIAcHc=", b"\r\n"):
        client.send(piece)
    assert client.sock.writes == [b"AHVzZXIAcHc=", b"\r\n"]  # type: ignore[attr-defined]


def test_spawner_reports_cpu_and_peak_rss() -> None:
    proc = procs.run_processes([[sys.executable, "-c", "print('hi')"]], dict(os.environ), spawner=sys.executable)[0]
    assert (proc.returncode, proc.stdout, proc.killed) == (0, "hi\n", False)
    assert proc.cpu_ms is not None and proc.cpu_ms >= 0  # ru_utime + ru_stime, written down by the spawner
    assert proc.maxrss_kib > 0 and proc.rss_floor_kib > 0
    assert proc.ended >= proc.started


def test_sensor_environment_allows_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("prtg_host", "from PRTG")
    args = argparse.Namespace(python=sys.executable, runs=1)
    bench = stack.Bench(args, {"host": "127.0.0.1"}, figures.Results())
    assert "PYTHONDONTWRITEBYTECODE" not in bench.env and "prtg_host" not in bench.env
    assert bench.env["PATH"] == os.environ["PATH"]


def test_help() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench"), "--help"], capture_output=True,
                          text=True, timeout=60, check=False, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tools/bench")
    for word in ("--runs", "--only", "lag,paths,overhead,bigmailbox,concurrent", "--probe-command", "oauth2"):
        assert word in done.stdout
    oauth = subprocess.run([sys.executable, str(ROOT / "tools" / "bench"), "oauth2", "--help"], capture_output=True,
                           text=True, timeout=60, check=False, cwd=str(ROOT))
    assert oauth.returncode == 0, oauth.stderr
    assert oauth.stdout.startswith("usage: tools/bench oauth2") and "--mechanism" in oauth.stdout


def test_unknown_section_is_refused() -> None:
    # --runs 0 is refused too (after the sections): nothing starts even if the section check broke
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench"), "--only", "lag,nonsense", "--runs", "0"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=str(ROOT))
    assert done.returncode == 2
    assert "unknown section(s) ['nonsense']" in done.stderr

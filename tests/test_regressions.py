"""Regressions the rest of the suite would let through (issue 10, "Tests that would let a
regression through today"): one focused test each.

- A failed STARTTLS handshake in starttls-if-available mode is an error on each leg, never a
  reconnect or a plain-text continuation (the downgrade a man in the middle would try).
- Response Time (SMTP) and SMTP Submit include the server's wait before its 250 after DATA.
- Zero and negative --warning-ms / --error-ms are parameter errors, refused before any connection.
- IDLE: counted as commands in the transcript (not a word the CAPABILITY line also holds).
- UID EXPUNGE with UIDPLUS; without it, a plain EXPUNGE only when nothing else is flagged.
- A server that announces nothing: the probe is still found by the once-per-interval search,
  which is not run after every NOOP.

Everything is observed from outside the sensor's process: its document, and the redacted
transcript that --verbose writes to stderr (lines "<ms> ms IMAP > <tag> <command>"), or what a
scripted server received. Nothing here imports the protocol modules, so the tests hold across
rewrites of smtp_send.py, imap_wait.py and tls.py.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import SensorRun, base_args, host, imap_session, mailstack, port, probe_uids, run_sensor, with_options
from fakeservers import (
    HANDSHAKE_FAILED,
    DelayingRelay,
    DeliveringImapServer,
    FakeImapServer,
    FakeSmtpServer,
    Fault,
    old_protocol_context,
)

PASSWORD = "Regress-Pw-3c4d5e"  # the fakes' password: must never show, nor go out in clear
_COMMAND = re.compile(r"^\s*\d+(?:\.\d+)? ms IMAP > \S+ (.*)$")


def imap_commands(stderr: str) -> List[str]:
    """The IMAP commands of a --verbose transcript, in order, without their tags."""
    return [m.group(1).strip() for m in map(_COMMAND.match, stderr.splitlines()) if m]


def verbose(args: List[str]) -> SensorRun:
    """A run with the transcript on stderr and a JSON document (checked by run_sensor)."""
    run = run_sensor(with_options(args, format="prtg-json") + ["--verbose"])
    assert PASSWORD not in run.stdout + run.stderr
    return run


def fake_legs(stack: Dict[str, Any], smtp: Any = None, imap: Any = None, **options: str) -> List[str]:
    """The stack's command line with either leg (or both) pointed at a fake, plain text."""
    args = base_args(stack)
    if smtp is not None:
        args = with_options(args, smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_tls="off")
    if imap is not None:
        args = with_options(args, imap_host=imap.host, imap_port=str(imap.port), imap_tls="off",
                            imap_password=PASSWORD)
    return with_options(args, **options)


@pytest.fixture(scope="module")
def good_cert(stack: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """(cert, key) from the stack's CA for the server names, for the old-protocol server."""
    directory = tmp_path_factory.mktemp("regression-certs")
    shutil.copy(stack["ca_file"], directory / "ca.pem")
    shutil.copy(stack["ca_key"], directory / "ca.key")
    cert = mailstack.issue_certificate(directory, "good")
    return cert, cert.with_suffix(".key")


# -- a failed STARTTLS handshake is an error, never a downgrade -------------------------------

# what must never reach the server in clear after the failed handshake (nor on a new connection)
IN_CLEAR = {
    "smtp": ("EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA"),
    "imap": ("CAPABILITY", "LOGIN", "AUTHENTICATE", "SELECT", "EXAMINE", "NOOP", "SEARCH", "IDLE"),
}


def _sent_in_clear(lines: List[str], leg: str) -> List[str]:
    """The commands of IN_CLEAR[leg] among `lines`, also where TLS bytes precede them on a line."""
    found = []
    for line in lines:
        words = line.upper().split()
        found += [verb for verb in IN_CLEAR[leg] if any(word.endswith(verb) for word in words)]
    return found


@pytest.mark.parametrize("kind", ["alert", "old protocol"])
@pytest.mark.parametrize("leg", ["smtp", "imap"])
def test_failed_starttls_handshake_is_an_error_never_plain_text(stack, mailbox, good_cert, leg, kind):
    if kind == "alert":
        fault: Optional[Fault] = Fault("tls-alert", "STARTTLS")
        context = None
    else:
        fault, context = None, old_protocol_context(*good_cert)
    server_class = FakeSmtpServer if leg == "smtp" else FakeImapServer
    with server_class(fault, starttls=context) as server:
        if leg == "smtp":
            args = with_options(fake_legs(stack, smtp=server), smtp_tls="starttls-if-available", smtp_auth="password",
                                smtp_user="sender@roundtrip.test", smtp_password=PASSWORD)
        else:
            args = with_options(fake_legs(stack, imap=server), imap_tls="starttls-if-available")
        run = verbose(with_options(args, timeout="15"))
        received, connections = list(server.received), server.connections
    print(f"[{leg}: {kind}] {run.text}\n  received: {received}")  # shown for failures and with -rA
    step = "SMTP send" if leg == "smtp" else "IMAP receive"
    assert run.error, f"a failed STARTTLS handshake was not an error: {run.text}"
    assert run.text.startswith(step), run.text
    assert "handshake" in run.text.lower(), run.text
    # no fallback note ("SMTP without TLS: ..."); the other leg, plain text here, may say that
    # its password went out without TLS
    assert f"{leg.upper()} without TLS" not in run.text and "continuing without TLS" not in run.stderr, run.text
    assert HANDSHAKE_FAILED in received, f"the handshake was never tried: {received}"
    after = received[received.index(HANDSHAKE_FAILED) + 1:]
    assert not _sent_in_clear(after, leg), f"sent in plain text after the failed handshake: {after}"
    assert connections == 1, f"reconnected ({connections} connections): {received}"
    assert probe_uids(mailbox) == []


# -- the SMTP leg ends at the 250 after DATA -------------------------------------------------

DATA_DELAY = 1.5  # seconds the relay holds Postfix's answer to the end of the message


def test_smtp_leg_includes_the_servers_wait_after_data(stack, mailbox):
    with DelayingRelay(host(stack, "smtp_plain"), int(port(stack, "smtp_plain")), DATA_DELAY) as relay:
        args = with_options(base_args(stack), smtp_host=relay.host, smtp_port=str(relay.port), channels="detailed")
        run = verbose(args)
        held = relay.held
    assert not run.error, run.text
    assert held == 1, f"the relay held {held} answers after DATA, not 1"
    injected = DATA_DELAY * 1000
    assert run.doc.value("Response Time (SMTP)") >= injected, run.stdout
    assert run.doc.value("SMTP Submit") >= injected, run.stdout
    assert run.doc.value("Total") >= injected, run.stdout
    assert probe_uids(mailbox) == []


# -- limits on Total: zero and negative are refused ------------------------------------------


@pytest.mark.parametrize("value", ["0", "-0", "0.0", "-1", "-250.5", "-1e-9"])
@pytest.mark.parametrize("option", ["--warning-ms", "--error-ms"])
def test_zero_and_negative_limits_are_parameter_errors(stack, option, value):
    with FakeSmtpServer() as smtp, FakeImapServer() as imap:
        # "--opt=-1": argparse would take a lone "-1" for an option, which is another refusal
        run = run_sensor(fake_legs(stack, smtp=smtp, imap=imap) + [f"{option}={value}"])
        connections = smtp.connections + imap.connections
    assert run.error, f"{option} {value} was accepted: {run.text}"
    assert run.text.startswith("Parameters"), run.text
    assert connections == 0, f"{option} {value}: the sensor connected before refusing it"


def test_positive_limits_are_accepted(stack):
    """The other side of the refusal above: a refused limit is not just any limit."""
    with FakeSmtpServer() as smtp, FakeImapServer() as imap:
        args = fake_legs(stack, smtp=smtp, imap=imap, max_trip_time="1", timeout="8")
        run = run_sensor(args + ["--warning-ms=0.5", "--error-ms=60000"])
    assert run.error and run.text.startswith("Delivery"), run.text  # got to the wait: the fakes deliver nothing


# -- IDLE, counted as commands ---------------------------------------------------------------

LATE = 4.5  # seconds between the SMTP fake's 250 and the probe's arrival in the real mailbox;
# the wait spends its gaps in IDLE once they reach 0.5 s, about 3 s into the wait


def deliver_late(stack: Dict[str, Any], smtp: FakeSmtpServer, delay: float) -> threading.Thread:
    """Put what `smtp` accepts into the probe user's real INBOX (APPEND) `delay` s after its 250."""

    def deliver() -> None:
        give_up = time.monotonic() + 60
        while not smtp.accepted_at and time.monotonic() < give_up:
            time.sleep(0.02)
        if not smtp.accepted_at:
            return
        time.sleep(max(0.0, smtp.accepted_at[-1] + delay - time.monotonic()))
        client = imap_session(stack)
        client.append("INBOX", smtp.messages[-1])
        client.logout()

    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def late_smtp(stack: Dict[str, Any]) -> Iterator[FakeSmtpServer]:
    """An SMTP fake whose mail arrives in the real mailbox LATE seconds after it was accepted."""
    with FakeSmtpServer() as smtp:
        thread = deliver_late(stack, smtp, LATE)
        yield smtp
        thread.join(10)


def _idles(run: SensorRun) -> int:
    return sum(1 for c in imap_commands(run.stderr) if c.upper() == "IDLE")


def test_wait_auto_uses_idle_where_the_server_offers_it(stack, mailbox, late_smtp):
    args = fake_legs(stack, smtp=late_smtp, max_trip_time="15", interval="5", timeout="30", wait="auto")
    run = verbose(args)
    assert not run.error, run.text
    assert _idles(run) >= 1, f"no IDLE command in a {LATE} s wait:\n{run.stderr}"
    assert probe_uids(mailbox) == []


def test_wait_poll_never_idles(stack, mailbox, late_smtp):
    args = fake_legs(stack, smtp=late_smtp, max_trip_time="15", interval="5", timeout="30", wait="poll")
    run = verbose(args)
    assert not run.error, run.text
    assert re.search(r"IMAP < \* CAPABILITY .*\bIDLE\b", run.stderr), "the server should offer IDLE"
    assert _idles(run) == 0, f"IDLE sent with --wait poll:\n{run.stderr}"
    assert probe_uids(mailbox) == []


# -- EXPUNGE: UID EXPUNGE with UIDPLUS, a plain one only when safe ---------------------------


def _plain_expunges(commands: List[str]) -> List[str]:
    return [c for c in commands if c.upper().split()[:1] == ["EXPUNGE"]]


def _uid_expunges(commands: List[str]) -> List[str]:
    return [c for c in commands if c.upper().split()[:2] == ["UID", "EXPUNGE"]]


def test_with_uidplus_only_uid_expunge(stack, mailbox):
    run = verbose(base_args(stack))  # Dovecot offers UIDPLUS
    commands = imap_commands(run.stderr)
    assert not run.error, run.text
    assert _uid_expunges(commands), commands
    assert not _plain_expunges(commands), commands
    assert probe_uids(mailbox) == []


@pytest.mark.parametrize("flagged", [(), (7,)], ids=["nothing else flagged", "another message flagged"])
def test_without_uidplus_a_plain_expunge_only_when_nothing_else_is_flagged(stack, flagged):
    with FakeSmtpServer() as smtp, DeliveringImapServer(smtp, capabilities="IMAP4rev1 IDLE", flagged=flagged) as imap:
        run = verbose(fake_legs(stack, smtp=smtp, imap=imap, max_trip_time="5", timeout="15"))
        commands = imap.commands
    transcript = imap_commands(run.stderr)
    assert not run.error, run.text
    assert not _uid_expunges(commands), commands
    store = next((i for i, c in enumerate(commands) if c.upper().startswith(f"UID STORE {imap.PROBE_UID} +FLAGS")),
                 None)
    assert store is not None, f"the probe was not flagged \\Deleted: {commands}"
    if flagged:
        assert not _plain_expunges(commands), commands
        assert run.doc.warning and "not expunged" in run.text, run.text
    else:
        expunges = [i for i, c in enumerate(commands) if c.upper() == "EXPUNGE"]
        assert len(expunges) == 1, commands
        checked = [i for i, c in enumerate(commands) if re.search(r"(?i)\bSEARCH\b.*\bDELETED\b", c)]
        assert checked and store < checked[0] < expunges[0], f"EXPUNGE without looking at \\Deleted first: {commands}"
        assert not run.doc.warning, run.text
        assert transcript.count("EXPUNGE") == 1, transcript


# -- servers that announce nothing: the once-per-interval search -----------------------------

QUIET_DELAY = 3.5  # the probe shows in the fake mailbox this long after the SMTP fake's 250


def test_quiet_server_is_searched_once_per_interval_not_after_every_noop(stack):
    with FakeSmtpServer() as smtp, DeliveringImapServer(smtp, announce=False, visible_after=QUIET_DELAY) as imap:
        run = verbose(fake_legs(stack, smtp=smtp, imap=imap, interval="1", max_trip_time="10", timeout="20"))
        commands = imap.commands
    transcript = imap_commands(run.stderr)
    assert not run.error, f"the probe in a mailbox that never announces it was not found: {run.text}"
    assert not any("EXISTS" in line for line in imap.received)
    noops = [c for c in transcript if c.upper() == "NOOP"]
    searches = [c for c in transcript if re.match(r"(?i)UID SEARCH UID \d+:\*", c)]
    assert searches == [c for c in commands if re.match(r"(?i)UID SEARCH UID \d+:\*", c)]
    # visible after 3.5 s, --interval 1: searched at about 0, 1, 2, 3 and 4 s, found by the last
    assert len(searches) >= int(QUIET_DELAY), f"{len(searches)} searches in a {QUIET_DELAY} s wait:\n{transcript}"
    assert run.doc.value("Response Time (IMAP)") < 10000 - 1000, "found only by the search at the very end"
    assert len(searches) * 2 < len(noops), f"{len(searches)} searches for {len(noops)} NOOPs: one after every NOOP?"


# -- found while fuzzing (tests/test_server_fuzz.py): the sensor is wrong today ---------------


@pytest.mark.parametrize("fault", [Fault("drop", "EXPUNGE"),
                                   Fault("reply", "EXPUNGE", reply="NO [SERVERBUG] Expunge failed (fake)")],
                         ids=["connection dropped", "NO"])
def test_a_failed_delete_is_not_blamed_on_a_missing_uidplus(stack, fault):
    with FakeSmtpServer() as smtp, DeliveringImapServer(smtp, fault) as imap:  # offers UIDPLUS
        run = run_sensor(fake_legs(stack, smtp=smtp, imap=imap, max_trip_time="5", timeout="15"))
        uid_expunges = _uid_expunges(imap.commands)
    assert uid_expunges, "the fault should strike at UID EXPUNGE"
    assert not run.error and run.doc.warning, run.text
    assert "deleting the probe" in run.text and "later run removes it" in run.text, run.text
    assert "lacks UIDPLUS" not in run.text, run.text

"""Faults: whatever a server does, the sensor ends in time with one clear error document.

The issue's list ("Never hang, never lose mail, never leak a secret", fault part), a test each.
Every test runs the sensor as PRTG would, with a small --timeout (BUDGET) and per-leg timeouts
far above it (so the budget has to win), and checks: exit code 0, one document the checker
accepts, error=1, a text that names the step and the phase or cause, no traceback, the process
done within BUDGET + SLACK seconds (the subprocess is killed after that), and no probe left in
the real mailbox. The leg that behaves is the real stack (fixture `stack`) where it can be;
the misbehaving leg is a fake from fakeservers.py. Where a fault strikes after the probe was
sent, the SMTP leg is a fake that swallows the mail, so nothing is left anywhere. The last test
checks that different faults read differently.

Wording checks are substrings, case-insensitive, with alternatives where several phrasings
would do (see `expect`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple, TypeVar, Union

import pytest
from conftest import SensorRun, base_args, mailstack, probe_uids, run_sensor, with_options
from fakeservers import (
    FakeImapServer,
    FakeSmtpServer,
    Fault,
    HangingPort,
    RefusingPort,
    issue_expired_certificate,
    make_self_signed_certificate,
    old_protocol_context,
    server_context,
)

BUDGET = 8  # --timeout of every run, seconds
SLACK = 3  # the process must be gone BUDGET + SLACK seconds after its start
LEG_TIMEOUT = "60"  # --smtp-timeout and --imap-timeout: far above the budget on purpose
PASSWORD = "Fault-Pw-5e6f7a"  # a test password that must never show up

# fault id -> document text, for test_distinct_faults_give_distinct_messages (runs last)
MESSAGES: Dict[str, str] = {}

TIMED_OUT = ("timed out", "timeout", "no answer")
CLOSED = ("closed the connection", "connection closed", "dropped", "reset", "disconnected")
GARBLED = ("garbage", "unexpected", "not understood", "invalid", "malformed", "not an smtp", "not an imap",
           "protocol error")

Words = Union[str, Tuple[str, ...]]
Server = TypeVar("Server")


# -- running the sensor -------------------------------------------------------------------


def sensor(fault_id: str, args: List[str]) -> SensorRun:
    """Run the sensor on `args` with the fault tests' timeouts; fail clearly if it hangs."""
    args = with_options(args, timeout=str(BUDGET), smtp_timeout=LEG_TIMEOUT, imap_timeout=LEG_TIMEOUT)
    started = time.monotonic()
    try:
        run = run_sensor(args, timeout=BUDGET + SLACK)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(
            f"[{fault_id}] no document: the sensor still ran {BUDGET + SLACK} s after its start "
            f"(--timeout {BUDGET}) and was killed. stdout so far: {out!r}",
            pytrace=False,
        )
    elapsed = time.monotonic() - started
    print(f"[{fault_id}] after {elapsed:.2f} s: {run.text}")  # shown by pytest -rA, and for failures
    MESSAGES[fault_id] = run.text
    assert run.error, f"[{fault_id}] expected an error document after {elapsed:.1f} s, got: {run.text}"
    assert "Traceback" not in run.stderr, f"[{fault_id}] traceback on stderr:\n{run.stderr}"
    return run


def expect(run: SensorRun, step: str, *words: Words, absent: Sequence[str] = ()) -> None:
    """The text starts with `step` and holds each of `words` (a tuple: any one of them).

    Every miss is listed at once, so one failing test shows all that is wrong with its text.
    """
    text = run.text
    low = text.lower()
    missing = []
    if not (text.startswith(f"{step} (") or text.startswith(f"{step}:")):
        missing.append(f"the step {step!r} first")
    for group in words:
        alternatives = (group,) if isinstance(group, str) else group
        if not any(a.lower() in low for a in alternatives):
            missing.append(" or ".join(repr(a) for a in alternatives))
    for word in absent:
        if word.lower() in low:
            missing.append(f"no {word!r}")
    for match in re.finditer(r"within (\d+(?:\.\d+)?) s", text):
        if float(match.group(1)) < 1:  # the budget's leftover, not the time that was waited
            missing.append(f"a true waiting time, not {match.group(0)!r}")
    assert not missing, f"expected {'; '.join(missing)} in the text: {text}"


def smtp_leg(stack: Dict[str, Any], server: Any, **options: str) -> List[str]:
    """The real IMAP mailbox (armed first), and `server` (anything with host, port) for SMTP."""
    return with_options(base_args(stack), smtp_host=server.host, smtp_port=str(server.port), smtp_tls="off",
                        **options)


def imap_leg(stack: Dict[str, Any], server: Any, smtp: Any = None, **options: str) -> List[str]:
    """`server` for IMAP; the real SMTP server, or `smtp` (a fake that swallows the probe)."""
    args = with_options(base_args(stack), imap_host=server.host, imap_port=str(server.port), imap_tls="off",
                        **options)
    if smtp is not None:
        args = with_options(args, smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_tls="off")
    return args


def with_auth(args: List[str]) -> List[str]:
    return with_options(args, smtp_auth="password", smtp_user="sender@roundtrip.test", smtp_password=PASSWORD)


def nothing_left(mailbox: Any) -> None:
    assert probe_uids(mailbox) == [], "a probe was left in the real mailbox"


@pytest.fixture
def servers() -> Iterator[Callable[[Server], Server]]:
    """servers(FakeSmtpServer(...)) starts nothing new, but stops the server at teardown."""
    started: List[Any] = []

    def keep(server: Server) -> Server:
        started.append(server)
        return server

    yield keep
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def certs(stack: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, Path]]:
    """(cert, key) by name: good, expired, self_signed, wrong_host; all but one from the stack's CA."""
    directory = tmp_path_factory.mktemp("fault-certs")
    shutil.copy(stack["ca_file"], directory / "ca.pem")  # issue_certificate wants the CA beside it
    shutil.copy(stack["ca_key"], directory / "ca.key")
    result = {}
    for name, san in (("good", mailstack.SERVER_SAN), ("wrong_host", "DNS:wrong.test")):
        cert = mailstack.issue_certificate(directory, name, san=san)
        result[name] = (cert, cert.with_suffix(".key"))
    result["expired"] = issue_expired_certificate(directory, "expired", directory / "ca.pem", directory / "ca.key")
    result["self_signed"] = make_self_signed_certificate(directory, "self_signed")
    return result


# -- connecting ---------------------------------------------------------------------------

STEP = {"smtp": "SMTP send", "imap": "IMAP receive"}
LEGS = ["smtp", "imap"]


def _leg(stack: Dict[str, Any], leg: str, server: Any, **options: str) -> List[str]:
    return smtp_leg(stack, server, **options) if leg == "smtp" else imap_leg(stack, server, **options)


@pytest.mark.parametrize("leg", LEGS)
def test_connection_refused(stack, mailbox, servers, leg):
    port = servers(RefusingPort())
    run = sensor(f"{leg}: connection refused", _leg(stack, leg, port))
    expect(run, STEP[leg], "connection refused", "connect", ("listens", "firewall"))
    nothing_left(mailbox)


@pytest.mark.parametrize("leg", LEGS)
def test_unknown_host(stack, mailbox, leg):
    run = sensor(f"{leg}: unknown host", with_options(base_args(stack), **{f"{leg}_host": "no-such-host.invalid"}))
    expect(run, STEP[leg], "no-such-host.invalid", "unknown host", ("DNS", "host name"))
    nothing_left(mailbox)


@pytest.mark.parametrize("leg", LEGS)
def test_connect_that_hangs(stack, mailbox, servers, leg):
    port = servers(HangingPort())
    if not port.hangs:
        pytest.skip("connect() to a full accept queue does not hang here (net.ipv4.tcp_abort_on_overflow?)")
    run = sensor(f"{leg}: connect hangs", _leg(stack, leg, port))
    expect(run, STEP[leg], TIMED_OUT, "connect", absent=["greeting", "banner"])
    nothing_left(mailbox)


# -- stalls: accepted, then silence -------------------------------------------------------

SMTP_STALLS: Dict[str, Tuple[Fault, Words, bool]] = {
    # id: (fault, words the text must hold besides "timed out", needs AUTH)
    "silent": (Fault("stall", "connect"), ("greeting", "banner"), False),
    "after banner": (Fault("stall", "EHLO"), "EHLO", False),
    "after AUTH": (Fault("stall", "AUTH"), "AUTH", True),
    "after DATA": (Fault("stall", "end-of-data"), "DATA", False),
}


@pytest.mark.parametrize("case", list(SMTP_STALLS))
def test_smtp_server_stalls(stack, mailbox, servers, case):
    fault, phase, auth = SMTP_STALLS[case]
    smtp = servers(FakeSmtpServer(fault))
    args = smtp_leg(stack, smtp)
    run = sensor(f"smtp: stalls {case}", with_auth(args) if auth else args)
    expect(run, "SMTP send", TIMED_OUT, phase, absent=[PASSWORD])
    nothing_left(mailbox)


IMAP_STALLS: Dict[str, Tuple[Fault, Words, bool]] = {
    # id: (fault, words besides "timed out", the fault strikes after the probe was sent)
    "silent": (Fault("stall", "connect"), ("greeting", "banner"), False),
    # imaplib's first command after the greeting is CAPABILITY (the fake's greeting has none)
    "after banner": (Fault("stall", "CAPABILITY"), ("CAPABILITY", "after the greeting", "after its greeting"), False),
    "after LOGIN": (Fault("stall", "LOGIN"), "LOGIN", False),
    "in IDLE": (Fault("stall", "DONE"), "IDLE", True),
}


@pytest.mark.parametrize("case", list(IMAP_STALLS))
def test_imap_server_stalls(stack, mailbox, servers, case):
    fault, phase, after_send = IMAP_STALLS[case]
    imap = servers(FakeImapServer(fault))
    smtp = servers(FakeSmtpServer()) if after_send else None
    run = sensor(f"imap: stalls {case}", imap_leg(stack, imap, smtp))
    expect(run, "IMAP receive", TIMED_OUT, phase, absent=["Delivery"])
    if smtp is not None:
        assert len(smtp.messages) == 1, "the fault should strike after the probe was sent"
    nothing_left(mailbox)


@pytest.mark.parametrize("leg", LEGS)
def test_server_that_trickles_forever(stack, mailbox, servers, leg):
    """Beyond the list: one byte every 0.2 s never trips a read timeout; only the budget ends it."""
    server = servers(FakeSmtpServer(Fault("trickle", "connect")) if leg == "smtp"
                     else FakeImapServer(Fault("trickle", "connect")))
    run = sensor(f"{leg}: trickles", _leg(stack, leg, server))
    expect(run, STEP[leg], ("timed out", "budget", "deadline", "too slow", "--timeout"))
    nothing_left(mailbox)


# -- dropped connections and garbage ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "fault", "phase"),
    [
        ("at MAIL", Fault("drop", "MAIL"), "MAIL FROM"),
        ("mid-reply to EHLO", Fault("drop", "EHLO", reply="250-fake.smtp.test\r\n250-8BITMIME\r\n"), "EHLO"),
    ],
)
def test_smtp_connection_dropped_mid_command(stack, mailbox, servers, case, fault, phase):
    smtp = servers(FakeSmtpServer(fault))
    run = sensor(f"smtp: dropped {case}", smtp_leg(stack, smtp))
    expect(run, "SMTP send", CLOSED, phase)
    nothing_left(mailbox)


@pytest.mark.parametrize(
    ("case", "fault", "phase", "after_send"),
    [
        ("mid-reply to SELECT", Fault("drop", "SELECT", reply="* FLAGS (\\Seen \\Deleted)\r\n"), "SELECT", False),
        ("at SEARCH while waiting", Fault("drop", "SEARCH", after=1), ("the mailbox check", "SEARCH"), True),
    ],
)
def test_imap_connection_dropped_mid_command(stack, mailbox, servers, case, fault, phase, after_send):
    imap = servers(FakeImapServer(fault))
    smtp = servers(FakeSmtpServer()) if after_send else None
    run = sensor(f"imap: dropped {case}", imap_leg(stack, imap, smtp))
    expect(run, "IMAP receive", CLOSED, phase, absent=["Delivery"])
    nothing_left(mailbox)


@pytest.mark.parametrize(
    ("case", "fault", "phase", "absent"),
    [
        ("instead of the banner", Fault("garbage", "connect"), ("greeting", "banner", "connect"), ["refused"]),
        ("in reply to MAIL", Fault("garbage", "MAIL"), "MAIL FROM", ["rejected"]),
    ],
)
def test_smtp_garbage(stack, mailbox, servers, case, fault, phase, absent):
    smtp = servers(FakeSmtpServer(fault))
    run = sensor(f"smtp: garbage {case}", smtp_leg(stack, smtp))
    expect(run, "SMTP send", GARBLED, phase, absent=absent)
    nothing_left(mailbox)


@pytest.mark.parametrize(
    ("case", "fault", "phase", "absent"),
    [
        ("instead of the greeting", Fault("garbage", "connect"), ("greeting", "banner", "connect"), []),
        ("in reply to SELECT", Fault("garbage", "SELECT"), "SELECT", ["cannot be opened"]),
    ],
)
def test_imap_garbage(stack, mailbox, servers, case, fault, phase, absent):
    imap = servers(FakeImapServer(fault))
    run = sensor(f"imap: garbage {case}", imap_leg(stack, imap))
    expect(run, "IMAP receive", GARBLED, phase, absent=absent)
    nothing_left(mailbox)


# -- TLS ----------------------------------------------------------------------------------

CERTIFICATE_FAULTS = {
    "expired": ("expired",),
    "self_signed": ("self-signed", "self signed"),
    "wrong_host": ("hostname", "host name", "mismatch"),
}


def _tls_server(leg: str, context: Any) -> Any:
    return FakeSmtpServer(tls=context) if leg == "smtp" else FakeImapServer(tls=context)


@pytest.mark.parametrize("kind", list(CERTIFICATE_FAULTS))
@pytest.mark.parametrize("leg", LEGS)
def test_bad_certificate(stack, mailbox, servers, certs, leg, kind):
    server = servers(_tls_server(leg, server_context(*certs[kind])))
    # "localhost": a name, so a wrong certificate is a host name mismatch, not an IP mismatch
    args = with_options(_leg(stack, leg, server), **{f"{leg}_host": "localhost", f"{leg}_tls": "tls"})
    run = sensor(f"{leg}: certificate {kind}", args)
    expect(run, STEP[leg], "certificate", CERTIFICATE_FAULTS[kind], ("--ca-file", "--insecure"))
    nothing_left(mailbox)


@pytest.mark.parametrize("kind", ["alert", "old protocol"])
@pytest.mark.parametrize("leg", LEGS)
def test_tls_handshake_failure(stack, mailbox, servers, certs, leg, kind):
    if kind == "alert":
        server = servers(FakeSmtpServer(Fault("tls-alert", "connect")) if leg == "smtp"
                         else FakeImapServer(Fault("tls-alert", "connect")))
        cause: Words = ("HANDSHAKE_FAILURE", "handshake failure")
    else:
        server = servers(_tls_server(leg, old_protocol_context(*certs["good"])))
        cause = ("PROTOCOL_VERSION", "protocol version", "TLS 1.2")
    args = with_options(_leg(stack, leg, server), **{f"{leg}_tls": "tls"})
    run = sensor(f"{leg}: TLS handshake {kind}", args)
    expect(run, STEP[leg], "TLS", "handshake", cause, absent=["certificate is not trusted"])
    nothing_left(mailbox)


# -- refusals -----------------------------------------------------------------------------


def test_smtp_login_rejected(stack, mailbox, servers):
    smtp = servers(FakeSmtpServer(Fault("reply", "AUTH", reply="535 5.7.8 Authentication credentials invalid (fake)")))
    run = sensor("smtp: login rejected", with_auth(smtp_leg(stack, smtp)))
    expect(run, "SMTP send", "login rejected", "535 5.7.8", "credentials invalid", "--smtp-password",
           absent=[PASSWORD])
    nothing_left(mailbox)


def test_imap_login_rejected(stack, mailbox, servers):
    refusal = Fault("reply", "LOGIN", reply="NO [AUTHENTICATIONFAILED] Authentication failed (fake).")
    imap = servers(FakeImapServer(refusal))
    run = sensor("imap: login rejected", imap_leg(stack, imap, imap_password=PASSWORD))
    expect(run, "IMAP receive", "login rejected", "AUTHENTICATIONFAILED", "--imap-password", absent=[PASSWORD])
    nothing_left(mailbox)


SMTP_REFUSALS = {
    # (stage, class): the fake's reply; "banner" replaces the 220 greeting (and answers every
    # later command the same), "end-of-data" is the answer to the message itself
    ("banner", "4xx"): "421 4.7.0 Too many connections, try later (fake)",
    ("banner", "5xx"): "554 5.3.2 No SMTP service for this client (fake)",
    ("MAIL", "4xx"): "451 4.3.0 Sender check unavailable, try later (fake)",
    ("MAIL", "5xx"): "553 5.7.1 Sender address not allowed (fake)",
    ("RCPT", "4xx"): "450 4.2.0 Mailbox busy (fake)",
    ("RCPT", "5xx"): "550 5.1.1 No such user here (fake)",
    ("DATA", "4xx"): "451 4.3.0 Queue full, try later (fake)",
    ("DATA", "5xx"): "554 5.5.1 No valid recipients (fake)",
    ("end-of-data", "4xx"): "452 4.3.1 Insufficient system storage (fake)",
    ("end-of-data", "5xx"): "554 5.7.1 Message refused as spam (fake)",
}
STAGE_WORDS: Dict[str, Words] = {
    "banner": ("greeting", "banner", "session", "connect"),
    "MAIL": "MAIL FROM",
    "RCPT": "RCPT TO",
    "DATA": "DATA",
    "end-of-data": ("after DATA", "after the message", "end of data", "end of the message"),
}


@pytest.mark.parametrize(("stage", "kind"), list(SMTP_REFUSALS))
def test_smtp_refusal(stack, mailbox, servers, stage, kind):
    reply = SMTP_REFUSALS[(stage, kind)]
    smtp = servers(FakeSmtpServer(Fault("reply", "connect" if stage == "banner" else stage, reply=reply)))
    run = sensor(f"smtp: {kind} at {stage}", smtp_leg(stack, smtp))
    code, server_text = reply[:9], reply[10:]
    expect(run, "SMTP send", STAGE_WORDS[stage], code, server_text,
           "temporary" if kind == "4xx" else "permanent")
    assert len(smtp.messages) == (1 if stage == "end-of-data" else 0)
    nothing_left(mailbox)


# -- the mailbox --------------------------------------------------------------------------


def test_mailbox_missing(stack, mailbox, servers):
    refusal = Fault("reply", "SELECT", reply="NO [NONEXISTENT] Mailbox doesn't exist: Nope (fake)")
    imap = servers(FakeImapServer(refusal))
    run = sensor("imap: mailbox missing", imap_leg(stack, imap, mailbox="Nope"))
    expect(run, "IMAP receive", "'Nope'", ("cannot be opened", "does not exist", "doesn't exist", "missing"),
           ("NONEXISTENT", "Mailbox doesn't exist"), "--mailbox")
    nothing_left(mailbox)


@pytest.mark.parametrize(
    ("case", "fault"),
    [
        # what Dovecot says to a session whose selected mailbox another client deleted
        ("BYE", Fault("bye", "NOOP", reply="Selected mailbox was deleted, have to disconnect.", after=2)),
        ("NO", Fault("reply", "SEARCH", reply="NO [NONEXISTENT] Mailbox doesn't exist: INBOX (fake)", after=2)),
    ],
)
def test_mailbox_deleted_during_the_run(stack, mailbox, servers, case, fault):
    imap = servers(FakeImapServer(fault))
    smtp = servers(FakeSmtpServer())
    run = sensor(f"imap: mailbox deleted ({case})", imap_leg(stack, imap, smtp))
    expect(run, "IMAP receive", ("deleted", "doesn't exist", "does not exist", "NONEXISTENT"),
           ("the mailbox check", "while waiting", "NOOP", "SEARCH"), absent=["did not arrive"])
    assert len(smtp.messages) == 1, "the fault should strike after the probe was sent"
    nothing_left(mailbox)


@pytest.mark.parametrize(("limit", "max_trip", "words"), [
    ("max trip time", "3", "--max-trip-time 3"),
    ("budget", "30", "--timeout"),
])
def test_mail_never_arrives(stack, mailbox, servers, limit, max_trip, words):
    smtp = servers(FakeSmtpServer())  # says 250 and drops the mail: it never arrives
    args = with_options(smtp_leg(stack, smtp), max_trip_time=max_trip)
    run = sensor(f"delivery: never arrives ({limit})", args)
    expect(run, "Delivery", "did not arrive", words, "'INBOX'")
    assert len(smtp.messages) == 1
    nothing_left(mailbox)


# -- all together -------------------------------------------------------------------------


def _normalised(text: str) -> str:
    text = re.sub(r"(127\.0\.0\.1|localhost|\[::1\]):\d+", "HOST:PORT", text)
    text = re.sub(r"\d+(\.\d+)? s\b", "N s", text)
    return re.sub(r"\d+ checks", "N checks", text)


def test_distinct_faults_give_distinct_messages():
    """Runs last: the faults above, told apart by their texts (ports and durations aside).

    Where two faults need a different action from the administrator (no TCP connection at all
    vs. a connection without a greeting; a server that went silent vs. one that hung up), the
    texts must differ.
    """
    if len(MESSAGES) < 10:
        pytest.skip("needs the fault tests of this module to have run first")
    by_text: Dict[str, List[str]] = {}
    for fault_id, text in MESSAGES.items():
        by_text.setdefault(_normalised(text), []).append(fault_id)
    same = {text: ids for text, ids in by_text.items() if len(ids) > 1}
    assert not same, "different faults, same message:\n" + "\n".join(
        f"  {ids}: {text}" for text, ids in same.items()
    )

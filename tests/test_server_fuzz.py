"""Server-reply fuzzing (issue 10, "How to prove it"): whatever a server answers, wherever in the
conversation, the sensor prints exactly one valid document, exits 0, ends within its --timeout
(plus a small slack), shows no traceback and no password.

A scripted server (fakeservers.py, the "fuzz" fault) answers one hypothesis-chosen point of the
SMTP or the IMAP conversation with hypothesis-chosen bytes: invalid UTF-8, NUL, huge lines,
characters XML forbids, U+FFFE, lone CR, base64 junk, IMAP literals that never come, its own
echo of the client's line (the AUTH blob included), valid-looking replies with garbage tails;
then it closes the connection, holds it silently, or goes on normally. The other leg is the
real stack (the SMTP fuzz watches the real mailbox) or, for the IMAP fuzz, a fake SMTP server
whose mail the fake mailbox receives, so that FETCH, STORE and EXPUNGE are reached too. The
format varies between the three PRTG formats.

Bounded: EXAMPLES runs per leg (PRTG_RT_FUZZ_EXAMPLES overrides), each with --timeout BUDGET.
A failure shows hypothesis's falsifying example and every problem of that run.

The faults this fuzzing found (U+FFFE / U+FFFF from a server's reply copied into the XML text;
an "internal error" document for an IMAP answer IMAPClient could not parse; smtplib's own "500
Line too long." reported as the server's refusal) are fixed; each keeps a test of its own at the
end of this file, and an "internal error" document fails a fuzz run.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List

import pytest
from conftest import ROOT, base_args, check_output, probe_uids, run_sensor, with_options
from fakeservers import FUZZ_ECHO, FUZZ_TAG, DeliveringImapServer, FakeSmtpServer, Fault
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

BUDGET = 5  # --timeout of every run, seconds
SLACK = 3  # the document must be out BUDGET + SLACK seconds after the process started
EXAMPLES = int(os.environ.get("PRTG_RT_FUZZ_EXAMPLES", "60"))
SMTP_PASSWORD = "Fuzz-Smtp-Pw-8a9b"
IMAP_PASSWORD = "Fuzz-Imap-Pw-1c2d"
FORMATS = ["prtg-xml", "prtg-json", "script-v2"]

SMTP_POINTS = ["connect", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "end-of-data", "QUIT"]
IMAP_POINTS = ["connect", "CAPABILITY", "LOGIN", "SELECT", "NOOP", "SEARCH", "FETCH", "STORE", "EXPUNGE",
               "IDLE", "DONE", "LOGOUT"]
REPEATED = {"NOOP", "SEARCH", "CAPABILITY", "EHLO"}  # points a run reaches more than once

# -- the bytes ----------------------------------------------------------------------------------

SPECIAL = [
    b"\x00", b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"\x80",  # not UTF-8 (a surrogate, a lone continuation)
    "\ufffe".encode(), "\uffff".encode(), "\U0010ffff".encode(), b"\x01\x08\x0b\x0c\x1b[2J\x7f",  # XML forbids
    "\u2028\u0085".encode(), b"\r", b"\n", b"\r\r\n", b"\t", b" ",
]
SMTP_WORDS = [b"220 ", b"250 ", b"250-", b"235 ", b"334 ", b"354 ", b"421 ", b"535 ", b"550 ", b"999 ", b"25",
              b"2", b"-", b"250-STARTTLS\r\n", b"250 AUTH PLAIN LOGIN\r\n", b"250 2.0.0 Ok: queued as X\r\n",
              FUZZ_ECHO]
IMAP_WORDS = [b"* OK ", b"* BYE ", b"* NO ", b"+ ", b"* SEARCH ", b"* SEARCH 1 2 3 4294967295 ", b"* 1 FETCH (",
              b"* 1 FETCH (UID 42 BODY[HEADER.FIELDS (MESSAGE-ID)] {5}\r\n", b"{99999}\r\n", b"{4294967296}\r\n",
              b"* 1 EXISTS\r\n", b"* 4294967296 EXISTS\r\n", b"* CAPABILITY IMAP4rev1 ", b"* OK [UIDVALIDITY 0] ",
              b"* OK [UIDNEXT x] ", b"(", b")", b'"', b"\\", FUZZ_TAG + b" OK ", FUZZ_TAG + b" NO ",
              FUZZ_TAG + b" BAD ", FUZZ_TAG + b" OK [ALERT] ", FUZZ_TAG, FUZZ_ECHO]
ENDINGS = [b"", b"\r\n", b"\n", b"\r"]


def _huge(size: int) -> bytes:
    return b"X" * size


def payloads(words: List[bytes]) -> st.SearchStrategy[bytes]:
    piece = st.one_of(
        st.sampled_from(words),
        st.sampled_from(SPECIAL),
        st.binary(max_size=64),
        st.text(max_size=24).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(min_size=1, max_size=48).map(base64.b64encode),
    )
    huge = st.sampled_from([8_193, 70_000, 1_000_100]).map(_huge)  # smtplib's and imaplib's line limits
    body = st.lists(piece, min_size=0, max_size=6).map(b"".join)
    with_huge = st.tuples(body, huge, body).map(b"".join)
    start = st.one_of(st.just(b""), st.sampled_from(words))  # often a valid-looking start, then junk
    return st.tuples(start, st.one_of(body, body, body, with_huge), st.sampled_from(ENDINGS)).map(b"".join)


@dataclass(frozen=True)
class Case:
    point: str
    after: int
    data: bytes
    then: str  # close, hold, normal
    fmt: str
    variant: str  # per leg: SMTP --smtp-tls; IMAP capabilities and delivery

    def fault(self) -> Fault:
        return Fault("fuzz", self.point, data=self.data, then=self.then, after=self.after)

    def __repr__(self) -> str:  # short, and exact: bytes are shown as Python literals
        size = f", {len(self.data)} bytes" if len(self.data) > 300 else ""
        data = self.data if len(self.data) <= 300 else self.data[:120] + b"..." + self.data[-60:]
        return (f"Case(point={self.point!r}, after={self.after}, then={self.then!r}, fmt={self.fmt!r}, "
                f"variant={self.variant!r}, data={data!r}{size})")


def cases(points: List[str], words: List[bytes], variants: List[str]) -> st.SearchStrategy[Case]:
    point = st.sampled_from(points)
    return point.flatmap(lambda p: st.builds(
        Case,
        point=st.just(p),
        after=st.integers(0, 2) if p in REPEATED else st.just(0),
        data=payloads(words),
        then=st.sampled_from(["close", "close", "hold", "normal", "normal"]),
        fmt=st.sampled_from(FORMATS),
        variant=st.sampled_from(variants),
    ))


# -- one run and what must hold ---------------------------------------------------------------


def _secret_leaks(output: str, passwords: List[str]) -> List[str]:
    """Passwords in the output, in clear or inside a base64 token that decodes to them."""
    leaks = [f"the password {p!r} in clear" for p in passwords if p in output]
    for token in set(re.findall(r"[A-Za-z0-9+/]{12,}={0,2}", output)):
        try:
            decoded = base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace")
        except ValueError:
            continue
        leaks += [f"the password {p!r} in base64 ({token})" for p in passwords if p in decoded]
    return leaks


def run_and_check(args: List[str], case: Case, passwords: List[str]) -> List[str]:
    """Run the sensor once; every broken promise, as a list of words (empty: all is well)."""
    args = with_options(args, format=case.fmt, timeout=str(BUDGET), smtp_timeout="60", imap_timeout="60")
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "prtg_roundtrip", *args], capture_output=True, input=b"",
                              cwd=str(ROOT), timeout=BUDGET + SLACK + 10, check=False)
    except subprocess.TimeoutExpired:
        return [f"no end: still running {BUDGET + SLACK + 10} s after its start (--timeout {BUDGET})"]
    elapsed = time.monotonic() - started
    problems = []
    try:
        stdout = proc.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"stdout is not UTF-8 ({exc})")
        stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    rejected = check_output.check(stdout, case.fmt)
    if rejected:
        problems.append(f"document rejected by the checker: {rejected}")
    if proc.returncode != 0:
        problems.append(f"exit code {proc.returncode}")
    if elapsed > BUDGET + SLACK:
        problems.append(f"took {elapsed:.1f} s with --timeout {BUDGET}")
    if "Traceback" in stdout + stderr:
        problems.append("a traceback")
    problems += _secret_leaks(stdout + stderr, passwords)
    text = ""
    if not rejected:
        doc = check_output.parse(stdout, case.fmt)
        text = str(doc.text or "")
        if "internal error" in text:
            problems.append("an internal error (an exception nobody turned into a message)")
    if problems:
        problems.append(f"after {elapsed:.1f} s; stdout: {stdout[:1500]!r}; stderr: {stderr[-1500:]!r}")
    else:
        print(f"{case!r}\n  -> {text[:300]}")
    return problems


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


# -- SMTP: the fuzzing server sends; the real mailbox watches ---------------------------------


def smtp_case(point: str, data: bytes, then: str = "close", fmt: str = "prtg-xml", variant: str = "off",
              after: int = 0) -> Case:
    return Case(point, after, data, then, fmt, variant)


@FUZZ_SETTINGS
@given(case=cases(SMTP_POINTS, SMTP_WORDS, ["off", "starttls-if-available"]))
@example(case=smtp_case("connect", b"220 \xff\xfe not UTF-8 \x00 NUL\r\n", "normal"))
@example(case=smtp_case("EHLO", b"250 " + b"X" * 70_000 + b"\r\n", "normal", "prtg-json"))
@example(case=smtp_case("MAIL", b"550 5.1.0 \x01\x08\x0b\x0c\x1b[2J\x7f control characters\r\n", "normal"))
@example(case=smtp_case("MAIL", "550 5.1.0 \ufffe\uffff non-characters\r\n".encode(), "normal"))
@example(case=smtp_case("RCPT", b"250 2.1.5 Ok\rlone CR\r", "hold", "script-v2"))
@example(case=smtp_case("AUTH", b"535 5.7.8 " + FUZZ_ECHO + b"\r\n", "normal"))
@example(case=smtp_case("DATA", b"354 " + base64.b64encode(bytes(range(40))) + b"\r\n", "normal", "prtg-json"))
@example(case=smtp_case("end-of-data", b"250 2.0.0 Ok: queu", "close", "script-v2"))
@example(case=smtp_case("end-of-data", b"250 2.0.0 Ok\x00\xff garbage tail \x1b[0m\r\n", "normal"))
def test_smtp_replies_fuzzed(stack, case):
    with FakeSmtpServer(case.fault()) as smtp:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_tls=case.variant,
                            smtp_auth="password", smtp_user="fuzz@roundtrip.test", smtp_password=SMTP_PASSWORD)
        problems = run_and_check(args, case, [SMTP_PASSWORD, stack["users"]["probe"]["password"]])
    assert not problems, f"{case!r}:\n  " + "\n  ".join(problems)


# -- IMAP: the fuzzing server is the mailbox; a fake SMTP server feeds it -----------------------

IMAP_VARIANTS = ["IDLE UIDPLUS, announces", "IDLE UIDPLUS, silent", "no UIDPLUS, announces", "no IDLE, late"]


def _imap_server(smtp: FakeSmtpServer, case: Case) -> DeliveringImapServer:
    capabilities = {"IDLE UIDPLUS": "IMAP4rev1 IDLE UIDPLUS", "no UIDPLUS": "IMAP4rev1 IDLE",
                    "no IDLE": "IMAP4rev1 UIDPLUS"}[case.variant.split(",")[0]]
    late = case.point in ("IDLE", "DONE") or case.variant.endswith("late")  # IDLE only from ~3 s into the wait
    return DeliveringImapServer(smtp, case.fault(), capabilities=capabilities, announce="announces" in case.variant,
                                visible_after=60.0 if late else 0.0)


def imap_case(point: str, data: bytes, then: str = "close", fmt: str = "prtg-xml",
              variant: str = IMAP_VARIANTS[0], after: int = 0) -> Case:
    return Case(point, after, data, then, fmt, variant)


@FUZZ_SETTINGS
@given(case=cases(IMAP_POINTS, IMAP_WORDS, IMAP_VARIANTS))
@example(case=imap_case("connect", b"* OK \xff\xfe\x00 not UTF-8\r\n", "normal"))
@example(case=imap_case("SELECT", b"* " + b"X" * 1_000_100 + b"\r\n", "normal", "prtg-json"))
@example(case=imap_case("LOGIN", "<TAG> NO \ufffe\uffff\x01\x0b forbidden in XML\r\n".encode(), "normal"))
@example(case=imap_case("NOOP", b"* BYE \x01\x08\x0b\x0c\x1b[2J\x7f control characters\r\n", "close"))
@example(case=imap_case("NOOP", b"* 1 EXISTS\r<TAG> OK lone CR\r", "hold", "script-v2"))
@example(case=imap_case("LOGIN", b"<TAG> NO [AUTHENTICATIONFAILED] " + FUZZ_ECHO + b"\r\n", "normal"))
@example(case=imap_case("SEARCH", b"* SEARCH " + base64.b64encode(bytes(range(40))) + b"\r\n", "normal",
                        "prtg-json"))
@example(case=imap_case("FETCH", b"* 1 FETCH (UID 42 BODY[HEADER] {99999}\r\npartial", "close", "script-v2"))
@example(case=imap_case("EXPUNGE", b"<TAG> OK done\x00\xff garbage tail \x1b[0m\r\n", "close"))
def test_imap_replies_fuzzed(stack, case):
    with FakeSmtpServer() as smtp, _imap_server(smtp, case) as imap:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), imap_host=imap.host,
                            imap_port=str(imap.port), imap_password=IMAP_PASSWORD)
        problems = run_and_check(args, case, [IMAP_PASSWORD])
    assert not problems, f"{case!r}:\n  " + "\n  ".join(problems)


def test_fuzz_servers_reach_every_point(stack, mailbox):
    """The fuzz points are reached: a normal run against the two fakes passes through each
    (so a point the sensor never reaches is not silently fuzzed in vain)."""
    with FakeSmtpServer() as smtp:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_auth="password",
                            smtp_user="fuzz@roundtrip.test", smtp_password=SMTP_PASSWORD)
        run_and_check(args, smtp_case("connect", b""), [])
        smtp_verbs = {line.split()[0].upper() for line in smtp.received if line.split()}
    assert set(SMTP_POINTS) - {"connect", "end-of-data"} <= smtp_verbs, smtp_verbs
    seen: Dict[str, Any] = {}
    for point in ("connect", "IDLE"):  # the probe delivered at once; never (the wait reaches IDLE)
        with FakeSmtpServer() as smtp:
            case = imap_case(point, b"", "normal")
            with _imap_server(smtp, case) as imap:
                args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port),
                                    imap_host=imap.host, imap_port=str(imap.port), imap_password=IMAP_PASSWORD)
                run_and_check(args, case, [])
                seen[point] = {c.split()[1 if c.upper().startswith("UID ") else 0].upper() for c in imap.commands}
    reached = set().union(*seen.values())
    assert set(IMAP_POINTS) - {"connect", "DONE", "IDLE"} <= reached, seen
    # the wait spends its gaps in IDLE from about 3 s on: within the budget, but only just
    print(f"IDLE reached within a {BUDGET} s budget: {'IDLE' in seen['IDLE']}")
    assert probe_uids(mailbox) == []


# -- found by the fuzzing: an IMAP answer the sensor does not turn into a message today ------------


@pytest.mark.parametrize(("point", "data"), [
    ("SEARCH", b"* SEARCH abc\r\n"),
    ("SEARCH", b"* SEARCH -1\r\n"),
    ("SEARCH", b"* SEARCH (abc)\r\n"),
    ("SELECT", b"* OK [UIDNEXT abc] Predicted next UID\r\n"),
    ("DONE", b"+ more\r\n"),  # reached only late in the wait (IDLE from ~3 s on): a longer budget
])
def test_malformed_imap_answer_is_an_imap_error(stack, point, data):
    case = imap_case(point, data, "normal", "prtg-json")
    with FakeSmtpServer() as smtp, _imap_server(smtp, case) as imap:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), imap_host=imap.host,
                            imap_port=str(imap.port), imap_password=IMAP_PASSWORD, format="prtg-json",
                            timeout="10" if point == "DONE" else str(BUDGET))
        run = run_sensor(args)
    assert run.error, run.text
    assert run.text.startswith("IMAP receive"), run.text
    assert point in run.text or "the mailbox check" in run.text, run.text


@pytest.mark.parametrize("leg", ["smtp", "imap"])
def test_xml_stays_valid_with_non_characters_in_a_servers_reply(stack, leg):
    smtp = FakeSmtpServer()  # the IMAP fake's feed; unused by the SMTP case
    if leg == "smtp":
        case = smtp_case("MAIL", "550 5.1.0 Sender \ufffe\uffff refused\r\n".encode(), "normal")
        server: Any = FakeSmtpServer(case.fault())
        args = with_options(base_args(stack), smtp_host=server.host, smtp_port=str(server.port))
    else:
        # a BYE's text goes into the document as it came (a NO's is escaped: \\xef\\xbf\\xbe)
        case = imap_case("NOOP", "* BYE Mailbox \ufffe\uffff refused\r\n".encode(), "close")
        server = _imap_server(smtp, case)
        args = with_options(base_args(stack), imap_host=server.host, imap_port=str(server.port),
                            imap_password=IMAP_PASSWORD)
    with smtp, server:
        proc = subprocess.run([sys.executable, "-m", "prtg_roundtrip", *with_options(args, timeout=str(BUDGET))],
                              capture_output=True, input=b"", cwd=str(ROOT), timeout=BUDGET + SLACK + 10, check=False)
    stdout = proc.stdout.decode("utf-8")
    assert "refused" in stdout, stdout  # the server's text is in the document
    assert check_output.check(stdout, "prtg-xml") == [], stdout


def test_an_overlong_smtp_line_is_not_reported_as_the_servers_500(stack):
    case = smtp_case("connect", b"220 " + b"X" * 9000 + b"\r\n", "normal", "prtg-json")
    with FakeSmtpServer(case.fault()) as smtp:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), format="prtg-json",
                            timeout=str(BUDGET))
        run = run_sensor(args)
    assert run.error and run.text.startswith("SMTP send"), run.text
    assert "500" not in run.text and "permanent refusal" not in run.text.lower(), run.text


def test_an_invalid_auth_challenge_is_an_smtp_error(stack):
    case = smtp_case("AUTH", b"334 abcde\r\n", "close", "prtg-json")
    with FakeSmtpServer(case.fault()) as smtp:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_auth="password",
                            smtp_user="fuzz@roundtrip.test", smtp_password=SMTP_PASSWORD, format="prtg-json",
                            timeout=str(BUDGET))
        run = run_sensor(args)
    assert run.error and run.text.startswith("SMTP send"), run.text
    assert "AUTH" in run.text, run.text

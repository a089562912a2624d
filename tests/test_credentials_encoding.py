"""Credentials that are legal but not plain ASCII words: UTF-8 user names and passwords, a space,
IMAP's literal syntax, quotes and backslashes (issue 10, "Input that is legal but unexpected").

Against the real servers: the stack's LOGIN_ALIASES (tools/mailstack.py) are other login names
of the probe mailbox, such as `prübe@roundtrip.test` with `Pässwört-Ünï-7c1e`. Dovecot offers
AUTH=PLAIN, so the sensor's IMAP leg uses AUTHENTICATE PLAIN (UTF-8) there; Postfix takes SMTP
AUTH PLAIN through Dovecot. The IMAP LOGIN command (servers without AUTH=PLAIN) is checked twice:
its quoting/literal encoding (`astring`) against the real Dovecot, and that the sensor uses it,
with a fake server that records the raw bytes.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List

import pytest
from conftest import base_args, host, port, probe_uids, run_sensor, with_options
from fakeservers import Connection, FakeImapServer, FakeSmtpServer
from imapclient import IMAPClient

from prtg_roundtrip.imap_session import astring

ALIASES = ["utf8", "space", "literal"]


def alias(stack: Dict[str, Any], key: str) -> Dict[str, str]:
    return dict(stack["aliases"][key])


def assert_clean(text: str, password: str) -> None:
    raw = password.encode("utf-8")
    for form in (password, base64.b64encode(raw).decode(), repr(raw)[2:-1]):
        assert form not in text, f"password leaked as {form!r}"


@pytest.mark.parametrize("key", ALIASES)
def test_unusual_logins_work_on_both_legs(stack, mailbox, key):
    who = alias(stack, key)
    args = with_options(base_args(stack, smtp="submission", imap="imap_starttls"), smtp_tls="starttls",
                        imap_tls="starttls", imap_user=who["login"], imap_password=who["password"],
                        smtp_auth="password", smtp_user=who["login"], smtp_password=who["password"])
    run = run_sensor(args + ["--verbose"])
    assert not run.error, run.text
    assert "IMAP > AUTHENTICATE PLAIN ***" in run.stderr
    assert "SMTP > AUTH PLAIN ***" in run.stderr
    assert_clean(run.stdout + run.stderr, who["password"])
    assert probe_uids(mailbox) == []


@pytest.mark.parametrize("key", ALIASES)
def test_a_wrong_unusual_password_is_a_login_error_not_an_internal_one(stack, mailbox, key):
    who = alias(stack, key)
    wrong = who["password"] + "ß"
    args = with_options(base_args(stack), imap_user=who["login"], imap_password=wrong)
    run = run_sensor(args)
    assert run.error and run.text.startswith("IMAP receive"), run.text
    assert "login rejected" in run.text and "internal error" not in run.text
    assert_clean(run.stdout + run.stderr, wrong)


@pytest.mark.parametrize("key", ALIASES)
def test_the_login_command_encoding_against_dovecot(stack, key):
    """astring(): quoted strings, or literals for UTF-8, as the real server parses them."""
    who = alias(stack, key)
    client = IMAPClient(host(stack, "imap_plain"), port=int(port(stack, "imap_plain")), ssl=False, timeout=10)
    try:
        typ, data = client._raw_command(b"LOGIN", [astring(who["login"]), astring(who["password"])], uid=False)
        assert typ == "OK", data
    finally:
        client.shutdown()


def test_astring_forms():
    assert astring("john smith") == b'"john smith"'
    assert astring('a"b\\c') == b'"a\\"b\\\\c"'
    assert astring("x{5}") == b'"x{5}"'
    assert astring("prübe") == "prübe".encode()  # 8-bit: IMAPClient sends it as a literal


class _LoginRecorder(FakeImapServer):
    """No AUTH=PLAIN and no LITERAL+: the client must use LOGIN and wait for '+' before a literal.
    Records the raw LOGIN bytes, literals included."""

    logins: List[bytes]

    def converse(self, conn: Connection) -> None:
        self.logins = []
        conn.send(self.GREETING)
        while True:
            line = conn.readline()
            words = [w.decode("ascii", "replace") for w in line.split(b" ")] + ["", ""]
            tag, verb = words[0], words[1].upper()
            if verb == "UID":
                verb = words[2].upper()
            if verb == "LOGIN":
                raw = line
                while raw.endswith(b"}") and b"{" in raw:
                    size = int(raw[raw.rindex(b"{") + 1:-1])
                    conn.send("+ go ahead\r\n")
                    data = b""
                    while len(data) < size:
                        data += conn.read_some()
                    literal, rest = data[:size], data[size:]
                    conn._buffer = rest + conn._buffer
                    tail = conn.readline()
                    raw = raw + b"\r\n" + literal + tail
                self.logins.append(raw)
                conn.send(f"{tag} OK [CAPABILITY {self.CAPABILITIES}] Logged in\r\n")
                continue
            self.received.append(line.decode("utf-8", "replace"))
            if not self._answer(conn, tag, verb):
                return


@pytest.mark.parametrize(("user", "expected_user"), [
    ("john smith@roundtrip.test", b'"john smith@roundtrip.test"'),
    ("x{5}@roundtrip.test", b'"x{5}@roundtrip.test"'),
    ("prübe@roundtrip.test", b"{21}\r\npr\xc3\xbcbe@roundtrip.test"),
])
def test_without_auth_plain_the_sensor_sends_login_with_astrings(stack, user, expected_user):
    password = "Pässwört-Ünï-7c1e"
    recorder = _LoginRecorder()
    with recorder as imap, FakeSmtpServer() as smtp:
        args = with_options(base_args(stack), imap_host=imap.host, imap_port=str(imap.port), smtp_host=smtp.host,
                            smtp_port=str(smtp.port), imap_user=user, imap_password=password, max_trip_time="1",
                            timeout="10")
        run = run_sensor(args + ["--verbose"])
        logins = list(recorder.logins)
    assert run.text.startswith("Delivery"), run.text  # logged in; the fake delivers nothing
    assert len(logins) == 1
    assert logins[0].split(b" ", 2)[2].startswith(expected_user), logins[0]
    assert password.encode("utf-8") in logins[0]  # as a literal, whole
    assert "IMAP > LOGIN ***" in run.stderr
    assert_clean(run.stdout + run.stderr, password)


def test_authenticate_plain_in_one_round_trip_where_sasl_ir_is_offered(stack, mailbox):
    """Dovecot offers SASL-IR (RFC 4959): the response goes with AUTHENTICATE, no '+' between."""
    run = run_sensor(base_args(stack) + ["--format", "prtg-json", "--verbose"], fmt="prtg-json")
    assert not run.error, run.text
    lines = [line.split(" IMAP ", 1)[1] for line in run.stderr.splitlines() if " IMAP " in line]
    start = lines.index("> AUTHENTICATE PLAIN ***")
    done = next(i for i, line in enumerate(lines) if "OK" in line and "Logged in" in line)
    assert not any(line.startswith("< +") for line in lines[start:done]), lines[start:done]

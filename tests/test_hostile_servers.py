"""Hostile servers beyond single faults (issue 10, "Time and signals"): a server that answers
every search with thousands of UIDs cannot make a check expensive, a SIGTERM names the protocol
step that was really running, and a server echoing a login blob never shows any of it."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import time
from typing import List

import pytest
from conftest import ROOT, base_args, check_output, run_sensor, with_options
from fakeservers import Connection, DeliveringImapServer, FakeImapServer, FakeSmtpServer, Fault

from prtg_roundtrip.imap_mailbox import MAX_CANDIDATES
from prtg_roundtrip.transcript import redact

FLOOD = 20000


class _FloodingImap(DeliveringImapServer):
    """Every non-DELETED search answers FLOOD UIDs above UIDNEXT (none of them the probe); FETCH
    records how many UIDs it was asked for."""

    fetched: List[int]

    def _answer(self, conn: Connection, tag: str, verb: str) -> bool:
        line = self.received[-1].upper()
        if verb == "SEARCH" and " DELETED" not in line:
            uids = " ".join(str(self.UIDNEXT + i) for i in range(FLOOD))
            conn.send(f"* SEARCH {uids}\r\n{tag} OK Search completed.\r\n")
            return True
        if verb == "FETCH":
            match = re.search(r"FETCH ([0-9,:]+)", line)
            self.fetched.append(len(match.group(1).split(",")) if match else 0)
            conn.send(f"{tag} OK Fetch completed.\r\n")
            return True
        return super()._answer(conn, tag, verb)


def test_a_search_flood_is_capped_and_the_run_ends_in_time(stack):
    with FakeSmtpServer() as smtp:
        imap = _FloodingImap(smtp)
        imap.fetched = []
        with imap:
            args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), imap_host=imap.host,
                                imap_port=str(imap.port), max_trip_time="3", interval="1", timeout="8")
            started = time.monotonic()
            run = run_sensor(args)
            took = time.monotonic() - started
            fetched = list(imap.fetched)
    assert run.error and run.text.startswith("Delivery"), run.text
    assert fetched and max(fetched) <= MAX_CANDIDATES, fetched
    assert took < 8 + 3  # inside the budget (a structural bound: the flood did not hold the run)


def test_sigterm_names_the_protocol_step_that_was_running(stack):
    """The IMAP server never answers SELECT; PRTG (or systemd) stops the sensor."""
    with FakeImapServer(Fault("stall", "SELECT")) as imap, FakeSmtpServer() as smtp:
        args = with_options(base_args(stack), imap_host=imap.host, imap_port=str(imap.port), smtp_host=smtp.host,
                            smtp_port=str(smtp.port), imap_timeout="60", timeout="60", format="prtg-json")
        proc = subprocess.Popen([sys.executable, "-m", "prtg_roundtrip", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=str(ROOT))
        deadline = time.monotonic() + 20
        while not any("SELECT" in line for line in imap.received) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    text = out.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, "prtg-json") == [], text
    doc = check_output.parse(text, "prtg-json")
    assert doc.error
    assert f"stopped by a signal (SIGTERM) during the IMAP leg (127.0.0.1:{imap.port}): SELECT INBOX" in doc.text


class _EchoingSmtp(FakeSmtpServer):
    """Refuses AUTH and quotes the client's whole AUTH line back, as some broken servers do."""

    def converse(self, conn: Connection) -> None:
        conn.send(self.BANNER)
        while True:
            line = conn.readline()
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.send(self.EHLO)
            elif verb == b"AUTH":
                conn.send(b"535 5.7.8 Authentication failed for " + line + b"\r\n")
            elif verb == b"QUIT":
                conn.send("221 2.0.0 Bye\r\n")
                return
            else:
                conn.send("250 2.0.0 Ok\r\n")


@pytest.mark.parametrize("password", ["Echo-Pw-3e1f0a", "Pässwört-Ünï-7c1e"])
def test_a_server_echoing_the_auth_blob_shows_none_of_it(stack, mailbox, password):
    with _EchoingSmtp() as smtp:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_auth="password",
                            smtp_user="sender@roundtrip.test", smtp_password=password)
        run = run_sensor(args + ["--verbose"])
    assert run.error and "login rejected" in run.text, run.text
    blob = base64.b64encode(b"\0sender@roundtrip.test\0" + password.encode()).decode()
    output = run.stdout + run.stderr
    assert password not in output
    assert blob[:16] not in output and blob[-16:] not in output  # masked whole, not half
    assert "Authentication failed for AUTH PLAIN ***" in run.text


def test_truncated_and_aligned_base64_of_a_secret_is_masked_whole():
    secret = "Pässwört-Ünï-7c1e"
    blob = base64.b64encode(b"\0someone@example.com\0" + secret.encode()).decode()
    for text in (blob, blob[:-4], blob[:-8], "prefix " + blob + " suffix"):
        masked = redact(text, [secret])
        assert blob[:12] not in masked, masked
        assert "***" in masked
    assert redact("250 2.0.0 Ok: queued as 4XyzAbcdef", [secret]) == "250 2.0.0 Ok: queued as 4XyzAbcdef"

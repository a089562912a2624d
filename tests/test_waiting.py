"""The wait schedule and its costs: a bounded number of commands, searches only when the server
announced mail, the leftover sweep only when one may be needed, and busy servers ([LIMIT])."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT, base_args, imap_session, run_sensor, with_options
from fakeservers import FakeImapServer, FakeSmtpServer, Fault

from prtg_roundtrip.wait_schedule import command_bound


def transcript_of(args, env=None) -> str:
    proc = subprocess.run([sys.executable, "-m", "prtg_roundtrip", *args, "--verbose"], capture_output=True,
                          cwd=str(ROOT), env=env, timeout=120, check=False)
    return proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8", "replace")


def test_a_full_wait_stays_within_the_documented_command_bound(stack, mailbox):
    helper = imap_session(stack)
    if not helper.folder_exists("Elsewhere"):
        helper.create_folder("Elsewhere")
    helper.logout()
    args = with_options(base_args(stack), mailbox="Elsewhere", max_trip_time="4", interval="1")
    text = transcript_of(args)
    assert "did not arrive" in text
    commands = [line for line in text.splitlines() if " IMAP > " in line]
    searches = [line for line in commands if "UID SEARCH UID" in line]
    noops = [line for line in commands if line.endswith(" NOOP")]
    assert 0 < len(commands) <= command_bound(4, 1)
    # nothing arrived in "Elsewhere": a search once per --interval, not after every NOOP
    assert len(noops) > 20 and len(searches) <= 4 + 1
    assert "IDLE" in text  # waits from 0.5 s on were spent in IDLE


def test_a_clean_run_lets_the_next_skip_the_sweep(stack, mailbox):
    args = with_options(base_args(stack), sensor_id="sweep-once")
    first = transcript_of(args)
    second = transcript_of(args)
    assert "Round trip" in first and "Round trip" in second
    assert "HEADER X-PRTG-Roundtrip" in first
    assert "HEADER X-PRTG-Roundtrip" not in second


class _BusyOnce(FakeImapServer):
    """Answers the first LOGIN with NO [LIMIT], as Dovecot does past mail_max_userip_connections."""

    def _answer(self, conn, tag, verb):
        if verb == "LOGIN" and not getattr(self, "_refused", False):
            self._refused = True
            conn.send(f"{tag} NO [LIMIT] Maximum number of connections from user+IP exceeded\r\n")
            return True
        return super()._answer(conn, tag, verb)


def _imap_fake(stack, server, smtp):
    return with_options(base_args(stack), imap_host=server.host, imap_port=str(server.port), imap_tls="off",
                        smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_tls="off", max_trip_time="1",
                        timeout="10")


def test_a_busy_server_is_tried_again(stack):
    with _BusyOnce() as imap, FakeSmtpServer() as smtp:
        run = run_sensor(_imap_fake(stack, imap, smtp))
        logins = [line for line in imap.received if " LOGIN " in line]
    assert len(logins) == 2
    assert run.error and run.text.startswith("Delivery")  # got past LOGIN; the fake delivers nothing


def test_a_server_that_stays_busy_gets_a_precise_message(stack):
    busy = Fault("reply", "LOGIN", reply="NO [LIMIT] Maximum number of connections from user+IP exceeded")
    with FakeImapServer(busy) as imap, FakeSmtpServer() as smtp:
        run = run_sensor(_imap_fake(stack, imap, smtp))
    assert run.error
    assert "refuses more sessions for this login" in run.text and "mail_max_userip_connections" in run.text
    assert "--imap-password" not in run.text  # not blamed on the credentials
    assert re.search(r"\[LIMIT\]", run.text)

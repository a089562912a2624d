"""A server without UIDPLUS, where another client has flagged a message \\Deleted.

A plain EXPUNGE would remove that message too, so the sensor must not send one: it flags its
probe, leaves it for a later run, and says so with a warning. The server here also announces
nothing on NOOP, so the probe is found by the once-per-interval search alone. A scripted server
(real Dovecot always has UIDPLUS); the SMTP leg is a fake that hands the probe to it.
"""

from __future__ import annotations

from email import message_from_bytes

from conftest import base_args, run_sensor, with_options
from fakeservers import FakeImapServer, FakeSmtpServer

PROBE_UID, FLAGGED_UID = 42, 7


class _OldServer(FakeImapServer):
    """No UIDPLUS; UID 7 is flagged \\Deleted by someone else; the probe appears as UID 42."""

    CAPABILITIES = "IMAP4rev1 IDLE"

    def __init__(self, smtp: FakeSmtpServer):
        self.smtp = smtp
        super().__init__()

    def _probe(self) -> bytes:
        return self.smtp.messages[-1] if self.smtp.messages else b""

    def _answer(self, conn, tag, verb):
        line = self.received[-1]
        if verb == "SEARCH":
            if "DELETED" in line.upper():
                conn.send(f"* SEARCH {FLAGGED_UID}\r\n{tag} OK Search completed.\r\n")
            else:
                found = f" {PROBE_UID}" if self._probe() and "SUBJECT" in line.upper() else ""
                conn.send(f"* SEARCH{found}\r\n{tag} OK Search completed.\r\n")
            return True
        if verb == "FETCH" and self._probe():
            headers = message_from_bytes(self._probe())
            wanted = "".join(f"{name}: {headers[name]}\r\n" for name in ("Message-ID", "Subject", "X-PRTG-Roundtrip"))
            body = (wanted + "\r\n").encode()
            conn.send(f"* 1 FETCH (UID {PROBE_UID} BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT X-PRTG-ROUNDTRIP)] "
                      f"{{{len(body)}}}\r\n".encode() + body + f")\r\n{tag} OK Fetch completed.\r\n".encode())
            return True
        return super()._answer(conn, tag, verb)


def test_without_uidplus_the_probe_is_flagged_not_expunged_when_others_are_flagged(stack):
    smtp = FakeSmtpServer()
    with smtp, _OldServer(smtp) as imap:
        args = with_options(base_args(stack), smtp_host=smtp.host, smtp_port=str(smtp.port), smtp_tls="off",
                            imap_host=imap.host, imap_port=str(imap.port), imap_tls="off", interval="1",
                            max_trip_time="5", timeout="15")
        run = run_sensor(args)
        commands = [line.split(" ", 1)[1] for line in imap.received if " " in line]
    assert not run.error, run.text
    assert run.doc.warning and "only flagged \\Deleted, not expunged: the server lacks UIDPLUS" in run.text
    assert any(c.startswith(f"UID STORE {PROBE_UID} +FLAGS.SILENT") for c in commands), commands
    assert not any(c.upper().startswith(("EXPUNGE", "UID EXPUNGE")) for c in commands), commands
    assert run.doc.value("Response Time (IMAP)") > 0

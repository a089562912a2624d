"""The reference clients of the paths section: the standard library doing one transaction, timed.

Run as a script in its own process (``python tools/bench/refclient.py``), stdlib only; reads its
settings as one JSON object on stdin (the password stays out of the process list) and prints
one JSON object: ``ms`` (the timed part), what it did, never the password.

- ``"kind": "smtp"``: smtplib with its defaults (no socket options of its own): connect and
  greeting, EHLO, [STARTTLS, EHLO], [AUTH by smtplib's own choice: PLAIN here], MAIL, RCPT,
  DATA with a message of ``size`` bytes; timed from before the TCP connect to the 250 after
  DATA; QUIT afterwards, untimed.  ``ehlo`` is given (as the sensor's --helo) so that smtplib
  does not look up the machine's FQDN inside the timed part.
- ``"kind": "imap"``: imaplib with its defaults: connect and greeting, CAPABILITY, [STARTTLS,
  CAPABILITY], ``AUTHENTICATE PLAIN`` (with SASL-IR where offered, as the sensor) or ``LOGIN``
  (``login``: what the sensor's transcript shows it used), SELECT INBOX; timed from before the
  TCP connect to the end of SELECT; LOGOUT afterwards, untimed.
- ``mode``: ``off``, ``starttls`` or ``tls`` (implicit).  ``tuned``: what the sensor does
  where the standard library's client shows a client-side artifact (Linux's delayed ACK): after
  an implicit-TLS handshake set TCP_QUICKACK (the server speaks first, and its greeting waits
  behind its TLS session tickets); for IMAP also join each line's pieces into one write
  (imaplib sends a literal and its CRLF separately, and Nagle holds the CRLF).

The TLS context (``ssl.create_default_context`` with the stack's CA: certificates verified) and
the message are made before the timer starts; so are all imports.
"""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib
import socket
import ssl
import sys
import time
from typing import Any, Dict, Optional


def quickack(sock: socket.socket) -> None:
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None:
        socket.socket.setsockopt(sock, socket.IPPROTO_TCP, option, 1)


class TunedSMTP_SSL(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        quickack(sock)
        return sock


class _JoinedWrites:
    """imaplib writes a literal (the AUTHENTICATE answer, a LOGIN literal) and its CRLF in two
    sends; Nagle holds the second until the first is acknowledged, which Linux delays: about
    40 ms on plain text.  This joins the pieces of a line into one write, as the sensor does
    (prtg_roundtrip/sockets.py, Coalescer)."""

    _held = b""

    def send(self, data: Any) -> None:  # bytes-like, as imaplib passes it
        data = self._held + bytes(data)
        if data.endswith(b"\r\n"):
            self._held = b""
            super().send(data)  # type: ignore[misc]
        else:
            self._held = data


class TunedIMAP4(_JoinedWrites, imaplib.IMAP4):
    pass


class TunedIMAP4_SSL(_JoinedWrites, imaplib.IMAP4_SSL):
    def _create_socket(self, timeout: Optional[float] = None) -> socket.socket:
        sock = super()._create_socket(timeout)  # type: ignore[misc]
        quickack(sock)
        return sock


def message(size: int, sender: str, recipient: str) -> bytes:
    """A plain message of exactly `size` bytes (at least its headers), CRLF line ends."""
    head = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: prtg-roundtrip bench reference message\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{time.time_ns()}.bench-reference@roundtrip.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode("ascii")
    body = b""
    remaining = size - len(head)
    while remaining >= 2:
        take = min(78, remaining)  # a line of at most 76 characters and its CRLF
        if remaining - take == 1:  # never leave a single byte: it could not end with CRLF
            take -= 1
        body += b"x" * (take - 2) + b"\r\n"
        remaining -= take
    return head + body


def smtp(cfg: Dict[str, Any], context: ssl.SSLContext) -> Dict[str, Any]:
    mode, tuned = cfg["mode"], bool(cfg.get("tuned"))
    data = message(int(cfg["size"]), cfg["from"], cfg["to"])
    client: smtplib.SMTP
    started = time.perf_counter()
    if mode == "tls":
        cls = TunedSMTP_SSL if tuned else smtplib.SMTP_SSL
        client = cls(cfg["host"], cfg["port"], local_hostname=cfg["ehlo"], timeout=30, context=context)
    else:
        client = smtplib.SMTP(cfg["host"], cfg["port"], local_hostname=cfg["ehlo"], timeout=30)
    client.ehlo()
    if mode == "starttls":
        client.starttls(context=context)
        client.ehlo()
    auth = None
    if cfg.get("user"):
        offered = client.esmtp_features.get("auth", "").upper().split()
        auth = next((m for m in ("CRAM-MD5", "PLAIN", "LOGIN") if m in offered), None)  # smtplib's own order
        client.login(cfg["user"], cfg["password"])
    client.mail(cfg["from"])
    client.rcpt(cfg["to"])
    code, answer = client.data(data)
    ms = (time.perf_counter() - started) * 1000.0
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    return {"ms": ms, "code": code, "answer": answer.decode("utf-8", "replace")[:80], "auth": auth,
            "size": len(data)}


def imap(cfg: Dict[str, Any], context: ssl.SSLContext) -> Dict[str, Any]:
    mode, tuned = cfg["mode"], bool(cfg.get("tuned"))
    user, password = cfg["user"], cfg["password"]
    plain = f"\0{user}\0{password}".encode()
    client: imaplib.IMAP4
    started = time.perf_counter()
    if mode == "tls":
        cls = TunedIMAP4_SSL if tuned else imaplib.IMAP4_SSL
        client = cls(cfg["host"], cfg["port"], ssl_context=context, timeout=30)
    else:
        client = (TunedIMAP4 if tuned else imaplib.IMAP4)(cfg["host"], cfg["port"], timeout=30)
    if mode == "starttls":
        client.starttls(context)
    if cfg.get("login", "").upper() == "AUTHENTICATE PLAIN" and "SASL-IR" in client.capabilities:
        # RFC 4959, as the sensor does where offered: the response with the command
        typ, data = client._simple_command("AUTHENTICATE", "PLAIN", base64.b64encode(plain).decode("ascii"))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"AUTHENTICATE refused: {data!r}")
        client.state = "AUTH"
        how = "AUTHENTICATE PLAIN (SASL-IR)"
    elif cfg.get("login", "").upper() == "AUTHENTICATE PLAIN":
        client.authenticate("PLAIN", lambda _challenge: plain)
        how = "AUTHENTICATE PLAIN"
    else:
        client.login(user, password)
        how = "LOGIN"
    typ, _ = client.select("INBOX")
    ms = (time.perf_counter() - started) * 1000.0
    try:
        client.logout()
    except (OSError, imaplib.IMAP4.error):
        pass
    return {"ms": ms, "select": typ, "login": how}


def main() -> int:
    cfg = json.loads(sys.stdin.read())
    context = ssl.create_default_context(cafile=cfg.get("ca_file") or None)
    base64.b64encode(b"warm")  # (imaplib's AUTHENTICATE encodes with it: loaded before the timer)
    try:
        result = smtp(cfg, context) if cfg["kind"] == "smtp" else imap(cfg, context)
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

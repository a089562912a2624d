"""What shapes the packets: kept to what each path's measurement needs, with the evidence.

`tools/bench paths` times every path (SMTP and IMAP; plain, STARTTLS, implicit TLS; with and
without login) against a plain standard-library client doing the same transaction in the same
run. What it showed on Postfix and Dovecot (TLS 1.3, loopback), and the rule taken from it:

- No TCP_NODELAY, on either leg. After a TLS 1.3 handshake the server sends its session tickets,
  and holds its next small write (the reply to our first command) under its own Nagle algorithm
  until we acknowledge them. A client with Nagle on sends that first command only once the
  server has acknowledged the handshake, which it does with the tickets, so the command carries
  our acknowledgement and nothing waits. With TCP_NODELAY the command leaves at once, the
  tickets arrive afterwards, Linux delays their acknowledgement, and the reply waits about
  40 ms: STARTTLS + EHLO read 48 ms instead of 4 (the artifact of issue 9).
  Nagle delays a write only while earlier data is unacknowledged, so it costs nothing to a
  client that writes each command whole and then reads the answer: smtplib does; IMAPClient
  writes a command in pieces (and imaplib a literal and its CRLF), so `Coalescer` joins them
  into one write per line.
- TCP_QUICKACK right after an implicit-TLS handshake (`after_handshake`): there the server
  speaks first, so the greeting is the small write held behind the tickets, and no command of
  ours carries the acknowledgement. Setting the option sends a pending acknowledgement at once
  and leaves Linux's interactive mode, so tickets still in flight are acknowledged on arrival:
  the SMTPS greeting takes 2 ms instead of 47 (a stdlib client shows the 47 ms; the tuned
  reference in the benchmark does what the sensor does).
"""

from __future__ import annotations

import socket
from typing import Callable

CRLF = b"\r\n"
_COALESCE_LIMIT = 1 << 16  # never hold more than this: write it out


def after_handshake(sock: socket.socket) -> None:
    """The handshake is done and the server speaks next: acknowledge at once (Linux)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is None:
        return
    try:
        socket.socket.setsockopt(sock, socket.IPPROTO_TCP, option, 1)
    except OSError:
        pass


class Coalescer:
    """Joins the pieces of one command line into one write: `write` is the real send;
    a piece that ends a line (CRLF) sends everything held so far."""

    def __init__(self, write: Callable[[bytes], None]):
        self._write = write
        self._held = b""

    def send(self, data: bytes) -> None:
        data = self._held + bytes(data)
        if data.endswith(CRLF) or len(data) >= _COALESCE_LIMIT:
            self._held = b""
            self._write(data)
        else:
            self._held = data

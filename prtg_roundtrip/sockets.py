"""Socket options that keep client-side TCP artifacts out of the measurement.

- TCP_NODELAY: IMAPClient writes a command and its CRLF in two sends; with Nagle's algorithm
  the CRLF waits for the ACK of the first part, which a server that has not yet seen a whole
  line delays (40 ms or more): every SEARCH would look that much slower.
- TCP_QUICKACK: right after a TLS handshake, the server's greeting can sit behind the server's
  Nagle until our delayed ACK of its last handshake record goes out (about 40 ms on Linux;
  measured on loopback SMTPS: connect 45 ms without, 1.9 ms with).
"""

from __future__ import annotations

import socket


def tune(sock: socket.socket) -> None:
    for level, name in ((socket.IPPROTO_TCP, "TCP_NODELAY"), (socket.IPPROTO_TCP, "TCP_QUICKACK")):
        option = getattr(socket, name, None)
        if option is None:
            continue
        try:
            socket.socket.setsockopt(sock, level, option, 1)
        except OSError:
            pass

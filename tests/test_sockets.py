"""The socket policy of prtg_roundtrip/sockets.py, as structural facts (tools/bench paths has the
figures): no TCP_NODELAY on either leg, each IMAP command line in one write, the quick ACK after
an implicit-TLS handshake. Against the real Postfix and Dovecot, and a unit table."""

from __future__ import annotations

import os
import socket
from typing import Any, Dict, List

import pytest
from conftest import base_args, with_options

from prtg_roundtrip.auth import NoAuth, PasswordAuth
from prtg_roundtrip.cli import build_parser
from prtg_roundtrip.deadline import Deadline
from prtg_roundtrip.imap_session import ImapSession
from prtg_roundtrip.settings import Settings, build_settings
from prtg_roundtrip.smtp_send import _Session
from prtg_roundtrip.sockets import Coalescer
from prtg_roundtrip.tls import secure
from prtg_roundtrip.transcript import Transcript

PATHS = {  # --*-tls mode: (SMTP port name, IMAP port name)
    "off": ("smtp_plain", "imap_plain"),
    "starttls": ("smtp_starttls", "imap_starttls"),
    "tls": ("smtps", "imaps"),
}


@pytest.mark.parametrize(
    "pieces, writes",
    [
        ([b"a1 NOOP\r\n"], [b"a1 NOOP\r\n"]),
        ([b"a2 UID SEARCH", b" ", b"ALL", b"\r\n"], [b"a2 UID SEARCH ALL\r\n"]),  # IMAPClient's pieces
        ([b"a3 LOGIN {4}\r\n", b"user", b" {2}\r\n", b"pw", b"\r\n"],  # literals: each prompt goes alone
         [b"a3 LOGIN {4}\r\n", b"user {2}\r\n", b"pw\r\n"]),
        ([b"DONE\r\n", b"a4 NOOP", b"\r\n"], [b"DONE\r\n", b"a4 NOOP\r\n"]),
        ([b"x" * 70000], [b"x" * 70000]),  # never holds more than 64 KiB
        ([bytearray(b"a5 NOOP\r\n")], [b"a5 NOOP\r\n"]),
    ],
)
def test_coalescer_joins_pieces_into_one_write_per_line(pieces: List[bytes], writes: List[bytes]) -> None:
    written: List[bytes] = []
    coalescer = Coalescer(written.append)
    for piece in pieces:
        coalescer.send(piece)
    assert written == writes


def _settings(stack: Dict[str, Any], mode: str) -> Settings:
    smtp, imap = PATHS[mode]
    info = stack
    args = with_options(
        base_args(info), smtp_tls=mode, imap_tls=mode,
        smtp_port=str(info["ports"][smtp]["port"]), imap_port=str(info["ports"][imap]["port"]),
    )
    return build_settings(vars(build_parser().parse_args(args)), os.environ)


def _nodelay(sock: Any) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class _RecordingSocket:
    """The session's socket, with every write recorded."""

    def __init__(self, sock: Any):
        self._sock = sock
        self.writes: List[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.mark.parametrize("mode", sorted(PATHS))
def test_imap_session_sends_each_command_in_one_write_without_nodelay(stack: Dict[str, Any], mode: str) -> None:
    settings = _settings(stack, mode)
    user = stack["users"]["probe"]
    with ImapSession(settings.imap, settings.tls, Deadline(30), Transcript(())) as session:
        session.open(PasswordAuth(user["login"], user["password"]))
        assert session.client is not None
        assert _nodelay(session.socket()) == 0
        imap = session.client._imap
        recorder = _RecordingSocket(imap.sock)
        imap.sock = recorder
        try:
            session.client.noop()
            session.client.search(["SUBJECT", "no such subject", "UID", "1:*"])  # sent in pieces by IMAPClient
        finally:
            imap.sock = recorder._sock
        assert len(recorder.writes) == 2, recorder.writes
        assert all(write.endswith(b"\r\n") and write.count(b"\r\n") == 1 for write in recorder.writes)


@pytest.mark.parametrize("mode", sorted(PATHS))
def test_smtp_session_leaves_nodelay_off(stack: Dict[str, Any], mode: str) -> None:
    settings = _settings(stack, mode)
    session = _Session(settings.smtp, settings.tls, Deadline(30), Transcript(()))
    try:
        security = secure(session, settings.smtp.tls, Transcript(()), session.fail)
        assert security.encrypted is (mode != "off")
        session.hello()
        assert _nodelay(session.socket()) == 0
    finally:
        session.close()
    assert isinstance(settings.smtp.auth, NoAuth)

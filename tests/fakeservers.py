"""Mail servers that misbehave on purpose, for tests/test_faults.py.

Real servers (tools/mailstack.py) produce the faults they can: a refused port, a wrong password,
an unknown recipient. These scripted fakes produce the rest: a server that accepts and says
nothing, stops after its banner, after AUTH or after the message, drops the connection in the
middle of a command, answers garbage or a chosen 4xx/5xx, stalls in IDLE, loses its mailbox;
a TLS server with a bad certificate or an old protocol; a port whose connect() never completes;
a STARTTLS whose handshake fails (the server then goes on listening in plain text, to record
whether the client carries on without TLS); arbitrary bytes at any point ("fuzz"); a mailbox
that receives what the fake SMTP server took (DeliveringImapServer); a relay in front of a real
server that holds its answer after DATA (DelayingRelay).

Every server listens on 127.0.0.1 on a port the kernel picks, serves each connection in a
thread of its own, and stops itself after `lifetime` seconds if nobody stops it first (the tests'
fixtures stop it at teardown). It behaves normally unless a `Fault` says otherwise:

    FakeSmtpServer()                                   # accepts every message and discards it
    FakeSmtpServer(Fault("stall", at="end-of-data"))   # takes the message, never answers
    FakeSmtpServer(Fault("reply", at="RCPT", reply="450 4.2.0 Mailbox busy"))
    FakeImapServer(Fault("bye", at="NOOP", reply="Selected mailbox was deleted", after=2))
    FakeImapServer(tls=server_context(cert, key))      # IMAPS with that certificate
    FakeSmtpServer(starttls=old_protocol_context(cert, key))  # STARTTLS offered, handshake fails
    FakeSmtpServer(Fault("tls-alert", at="STARTTLS"))  # STARTTLS offered, answered with an alert
    FakeImapServer(Fault("fuzz", at="NOOP", data=b"* \xff\x00", then="close"))

Stdlib only, so it runs wherever the tests run.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple, TypeVar, Union

from conftest import mailstack

HOST = "127.0.0.1"
LIFETIME = 60.0  # seconds a server lives at most
POLL = 0.1  # how often blocked threads look at the stop flag
HANDSHAKE_TIMEOUT = 5.0
GARBAGE = b"xyzzy plugh \xfe\xff 42\r\n"  # no digits up front, no protocol words, not UTF-8
# A TLS record: alert, TLS 1.2, length 2, level fatal (2), handshake_failure (40).
TLS_HANDSHAKE_FAILURE_ALERT = bytes([21, 3, 3, 0, 2, 2, 40])
TRICKLE_GAP = 0.2  # seconds between two bytes of a trickled reply: far below any read timeout

ACTIONS = {
    "stall": "say nothing from here on; keep the connection open until the client gives up",
    "drop": "send `reply` (may be empty or a partial answer), then close the connection",
    "garbage": "answer this and every later line with `reply` or GARBAGE",
    "reply": "answer this command with `reply` instead (IMAP: as the tagged completion; SMTP at "
    "connect: instead of the banner, and to every later command but QUIT)",
    "bye": "IMAP: send '* BYE <reply>' and close, as a server whose mailbox was deleted does",
    "trickle": "send an endless reply one byte at a time, never finishing a line",
    "tls-alert": "at connect or STARTTLS: read the ClientHello, answer with a fatal handshake_failure alert "
    "(at STARTTLS the session then goes on in plain text, recording what the client sends)",
    "fuzz": "send `data` (arbitrary bytes) instead of the answer, then `then`: 'close' the connection, "
    "'hold' it silently, or go on with the 'normal' answer",
}
FUZZ_THEN = ("close", "hold", "normal")
FUZZ_TAG, FUZZ_ECHO = b"<TAG>", b"<ECHO>"  # placeholders in a fuzz fault's data, see ScriptedServer.fuzz
# Recorded in `received` when a STARTTLS handshake failed; what follows came in plain text.
HANDSHAKE_FAILED = "<STARTTLS handshake failed>"


@dataclass(frozen=True)
class Fault:
    """What goes wrong, and when.

    `at` is "connect" (before anything is said, TLS included), a command verb as the client
    sends it, upper case and without IMAP's UID prefix ("EHLO", "AUTH", "MAIL", "RCPT", "DATA",
    "CAPABILITY", "LOGIN", "SELECT", "NOOP", "SEARCH", "IDLE", "STARTTLS"), "end-of-data" (SMTP:
    after the final ".") or "DONE" (IMAP: the client ends IDLE). The first `after` times the
    point is reached it is served normally. `data` and `then` are for "fuzz" only.
    """

    action: str
    at: str
    reply: str = ""
    after: int = 0
    data: bytes = b""
    then: str = "close"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {sorted(ACTIONS)}")
        if self.then not in FUZZ_THEN:
            raise ValueError(f"unknown fuzz continuation {self.then!r}; one of {FUZZ_THEN}")


class _Closed(Exception):
    """The client went away, or the server is stopping: end this session."""


def _bytes(data: Union[str, bytes]) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


class Connection:
    """One accepted connection: line reading and sending that notice the stop flag."""

    def __init__(self, sock: socket.socket, stopping: threading.Event):
        self.sock = sock
        self.stopping = stopping
        self._buffer = b""
        sock.settimeout(POLL)

    def _recv(self) -> bytes:
        while True:
            if self.stopping.is_set():
                raise _Closed
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                raise _Closed from None
            if not data:
                raise _Closed
            return data

    def readline(self) -> bytes:
        """The next line without its CRLF."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > 1 << 20:
                raise _Closed
            self._buffer += self._recv()
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def read_some(self) -> bytes:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        return self._recv()

    def send(self, data: Union[str, bytes]) -> None:
        try:
            self.sock.sendall(_bytes(data))
        except OSError:
            raise _Closed from None

    def hold(self) -> None:
        """Say nothing until the client gives up or the server stops: a stalled server."""
        while True:
            self._recv()  # read and ignore; raises _Closed at the end

    def trickle(self, data: bytes) -> None:
        """Send `data` over and over, one byte every TRICKLE_GAP seconds, until stopped."""
        for byte in itertools.cycle(data):
            if self.stopping.wait(TRICKLE_GAP):
                raise _Closed
            self.send(bytes([byte]))


_Listener = TypeVar("_Listener", bound="LoopbackListener")


class LoopbackListener:
    """A listener on 127.0.0.1:<free port> with an accept thread, for a limited lifetime; `stop`
    (or the end of a `with`) closes it and every socket it tracked. Subclasses set their own
    state first, then call `_listen`, and handle each connection in `_accepted`."""

    name = "listener"

    def _listen(self, lifetime: float) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._expires = time.monotonic() + lifetime
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(POLL)
        self.host: str = HOST
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{self.name} :{self.port}", daemon=True)
        self._acceptor.start()

    def __enter__(self: _Listener) -> _Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if threading.current_thread() is not self._acceptor:
            self._acceptor.join(2.0)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set() and time.monotonic() < self._expires:
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self._accepted(sock)
        self.stop()  # lifetime over, or stopped: end every connection too

    def _accepted(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.extend(socks)
        if self._stopping.is_set():
            for sock in socks:
                sock.close()


class ScriptedServer(LoopbackListener):
    """A threaded server on 127.0.0.1:<free port>; subclasses speak the protocol (`converse`)."""

    name = "scripted server"
    trickle_text = b"* slow "

    def __init__(self, fault: Optional[Fault] = None, *, tls: Optional[ssl.SSLContext] = None,
                 lifetime: float = LIFETIME, starttls: Optional[ssl.SSLContext] = None):
        self.fault = fault
        self.tls = tls
        self.starttls = starttls  # offer STARTTLS and upgrade with this context
        self.connections = 0  # connections accepted
        self.session = threading.local()  # per connection: `secure` after a STARTTLS handshake
        self.received: List[str] = []  # command lines in order (credentials masked)
        self._counts: Dict[str, int] = {}
        self._listen(lifetime)

    def __repr__(self) -> str:
        return f"<{self.name} {self.host}:{self.port} fault={self.fault}>"

    def _accepted(self, sock: socket.socket) -> None:
        self._track(sock)
        with self._lock:
            self.connections += 1
        threading.Thread(target=self._session, args=(sock,), daemon=True).start()

    def _session(self, sock: socket.socket) -> None:
        current = sock
        try:
            conn = Connection(sock, self._stopping)
            fault = self.due("connect")
            if fault is not None:
                if fault.action != "fuzz":
                    self.misbehave(conn, fault)
                    return
                if not self.fuzz(conn, fault):
                    return
            if self.tls is not None:
                sock.settimeout(HANDSHAKE_TIMEOUT)
                current = self.tls.wrap_socket(sock, server_side=True)  # the handshake
                self._track(current)
                conn = Connection(current, self._stopping)
            self.converse(conn)
        except (_Closed, OSError):  # ssl.SSLError too: a client that refused our certificate
            pass
        finally:
            current.close()

    # -- scripting ------------------------------------------------------------------------
    def due(self, point: str) -> Optional[Fault]:
        """The fault to play at `point` now, if any (counts how often the point was reached)."""
        fault = self.fault
        if fault is None or fault.at != point:
            return None
        with self._lock:
            seen = self._counts.get(point, 0)
            self._counts[point] = seen + 1
        return fault if seen >= fault.after else None

    def misbehave(self, conn: Connection, fault: Fault) -> None:
        """Play a fault that ends the conversation ("reply" and "bye" are the protocols' own)."""
        if fault.action == "stall":
            conn.hold()
        elif fault.action == "drop":
            if fault.reply:
                conn.send(fault.reply)
        elif fault.action == "garbage":
            garbage = _bytes(fault.reply) if fault.reply else GARBAGE
            conn.send(garbage)
            while True:
                conn.readline()
                conn.send(garbage)
        elif fault.action == "trickle":
            conn.trickle(_bytes(fault.reply) if fault.reply else self.trickle_text)
        elif fault.action == "tls-alert":
            conn.read_some()  # the ClientHello
            conn.send(TLS_HANDSHAKE_FAILURE_ALERT)
        else:
            raise ValueError(f"{self.name} cannot play {fault.action!r} here")

    def fuzz(self, conn: Connection, fault: Fault, tag: str = "") -> bool:
        """Send the fault's bytes; True when the conversation goes on with the normal answer.

        In the bytes, FUZZ_TAG becomes the tag of the IMAP command being answered, and
        FUZZ_ECHO the command line itself as the client sent it (secrets included: a server
        that echoes the AUTH blob).
        """
        data = fault.data.replace(FUZZ_TAG, tag.encode("ascii", "replace"))
        conn.send(data.replace(FUZZ_ECHO, getattr(self.session, "line", b"")))
        if fault.then == "hold":
            conn.hold()
        return fault.then == "normal"

    @property
    def offers_starttls(self) -> bool:
        return self.starttls is not None or (self.fault is not None and self.fault.at == "STARTTLS")

    def upgrade(self, conn: Connection, fault: Optional[Fault]) -> Tuple[Connection, bool]:
        """After the server's go-ahead to STARTTLS: the handshake, or its failure.

        A failed handshake (the fault's alert, or no common protocol with `starttls`) is
        recorded as HANDSHAKE_FAILED, and the session goes on in plain text on the same TCP
        connection, so that a client that carries on without TLS shows in `received`.
        Returns the connection to go on with and whether it is secure now.
        """
        if fault is not None and fault.action == "tls-alert":
            conn.read_some()  # the ClientHello
            conn.send(TLS_HANDSHAKE_FAILURE_ALERT)
            self.received.append(HANDSHAKE_FAILED)
            return conn, False
        if self.starttls is None:
            raise ValueError(f"{self.name}: STARTTLS without a context or a tls-alert fault")
        plain = conn.sock.dup()  # a failed wrap closes the socket it wrapped
        self._track(plain)
        conn.sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            secure = self.starttls.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError):
            self.received.append(HANDSHAKE_FAILED)
            return Connection(plain, self._stopping), False
        plain.close()
        self._track(secure)
        return Connection(secure, self._stopping), True

    def converse(self, conn: Connection) -> None:
        raise NotImplementedError


def _verb(words: List[bytes], index: int = 0) -> str:
    return words[index].upper().decode("ascii", "replace") if len(words) > index else ""


class FakeSmtpServer(ScriptedServer):
    """ESMTP enough for smtplib: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT.

    Accepted messages are kept in `messages` and go nowhere else: the "mail never arrives" fault.
    """

    name = "fake SMTP"
    trickle_text = b"220 fake.smtp.test is very slow today "
    BANNER = "220 fake.smtp.test ESMTP fake server for the prtg-roundtrip tests\r\n"
    EHLO = "250-fake.smtp.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN\r\n"
    REPLIES: ClassVar[Dict[str, str]] = {
        "HELO": "250 fake.smtp.test",
        "AUTH": "235 2.7.0 Authentication successful",
        "MAIL": "250 2.1.0 Sender ok",
        "RCPT": "250 2.1.5 Recipient ok",
        "RSET": "250 2.0.0 Ok",
        "NOOP": "250 2.0.0 Ok",
    }

    def __init__(self, fault: Optional[Fault] = None, *, tls: Optional[ssl.SSLContext] = None,
                 lifetime: float = LIFETIME, starttls: Optional[ssl.SSLContext] = None):
        self.messages: List[bytes] = []
        self.accepted_at: List[float] = []  # time.monotonic() of each message's 250
        super().__init__(fault, tls=tls, lifetime=lifetime, starttls=starttls)

    def converse(self, conn: Connection) -> None:
        conn.send(self.BANNER)
        secure = False
        while True:
            line = self.session.line = conn.readline()
            verb = _verb(line.split())
            self.received.append("AUTH ***" if verb == "AUTH" else line.decode("utf-8", "replace"))
            fault = self.due(verb)
            if fault is not None and fault.action == "fuzz":
                if not self.fuzz(conn, fault):
                    return
            elif fault is not None and not (verb == "STARTTLS" and fault.action == "tls-alert"):
                if fault.action == "reply":
                    conn.send(fault.reply + "\r\n")
                    continue
                self.misbehave(conn, fault)
                return
            if verb == "EHLO":
                starttls = "250-STARTTLS\r\n" if self.offers_starttls and not secure else ""
                conn.send(self.EHLO.replace("250-8BITMIME\r\n", "250-8BITMIME\r\n" + starttls))
            elif verb == "STARTTLS" and self.offers_starttls and not secure:
                conn.send("220 2.0.0 Ready to start TLS\r\n")
                conn, secure = self.upgrade(conn, fault)
            elif verb == "DATA":
                conn.send("354 End data with <CR><LF>.<CR><LF>\r\n")
                self.messages.append(self._read_message(conn))
                fault = self.due("end-of-data")
                if fault is not None and fault.action == "fuzz":
                    if not self.fuzz(conn, fault):
                        return
                    fault = None
                if fault is None:
                    self.accepted_at.append(time.monotonic())
                    conn.send(f"250 2.0.0 Ok: queued as FAKE{len(self.messages)}\r\n")
                elif fault.action == "reply":
                    conn.send(fault.reply + "\r\n")
                else:
                    self.misbehave(conn, fault)
                    return
            elif verb == "QUIT":
                conn.send("221 2.0.0 Bye\r\n")
                return
            else:
                conn.send(self.REPLIES.get(verb, "502 5.5.2 Command not recognized") + "\r\n")

    def misbehave(self, conn: Connection, fault: Fault) -> None:
        if fault.action != "reply":
            super().misbehave(conn, fault)
            return
        # at connect: a refusal instead of the banner ("421 Too many connections"), then the same
        # to every command until the client says QUIT, as Postfix's postscreen does
        conn.send(fault.reply + "\r\n")
        while _verb(conn.readline().split()) != "QUIT":
            conn.send(fault.reply + "\r\n")
        conn.send("221 2.0.0 Bye\r\n")

    @staticmethod
    def _read_message(conn: Connection) -> bytes:
        lines: List[bytes] = []
        while True:
            line = conn.readline()
            if line == b".":
                return b"\r\n".join(lines) + b"\r\n"
            lines.append(line[1:] if line.startswith(b".") else line)


class FakeImapServer(ScriptedServer):
    """IMAP4rev1 enough for IMAPClient: CAPABILITY, LOGIN, SELECT, NOOP, UID SEARCH/FETCH/STORE/
    EXPUNGE, IDLE/DONE, LOGOUT. Every mailbox exists and is empty, and no mail ever arrives.

    The greeting carries no CAPABILITY code, so imaplib's first command is CAPABILITY: a stall
    there is a stall right after the banner.
    """

    name = "fake IMAP"
    CAPABILITIES = "IMAP4rev1 IDLE UIDPLUS"
    GREETING = "* OK Fake IMAP server for the prtg-roundtrip tests ready\r\n"
    UIDVALIDITY = 1700000000
    UIDNEXT = 42

    def converse(self, conn: Connection) -> None:
        conn.send(self.GREETING)
        secure = False
        while True:
            line = self.session.line = conn.readline()
            words = line.split()
            tag = words[0].decode("ascii", "replace") if words else "*"
            verb = _verb(words, 1)
            if verb == "UID":
                verb = _verb(words, 2)
            self.received.append(f"{tag} LOGIN ***" if verb == "LOGIN" else line.decode("utf-8", "replace"))
            fault = self.due(verb)
            if fault is not None and fault.action == "fuzz":
                if not self.fuzz(conn, fault, tag):
                    return
            elif fault is not None and not (verb == "STARTTLS" and fault.action == "tls-alert"):
                if fault.action == "reply":
                    conn.send(f"{tag} {fault.reply}\r\n")
                    continue
                if fault.action == "bye":
                    conn.send(f"* BYE {fault.reply}\r\n")
                    return
                self.misbehave(conn, fault)
                return
            if verb == "STARTTLS" and self.offers_starttls and not secure:
                conn.send(f"{tag} OK Begin TLS negotiation now.\r\n")
                conn, secure = self.upgrade(conn, fault)
                continue
            self.session.secure = secure
            if not self._answer(conn, tag, verb):
                return

    def capabilities(self) -> str:
        """CAPABILITIES, and STARTTLS where offered and this session is not secure yet."""
        secure = getattr(self.session, "secure", False)
        return self.CAPABILITIES + (" STARTTLS" if self.offers_starttls and not secure else "")

    def _answer(self, conn: Connection, tag: str, verb: str) -> bool:
        """Answer one command normally; False when the session is over."""
        if verb == "CAPABILITY":
            conn.send(f"* CAPABILITY {self.capabilities()}\r\n{tag} OK Capability completed.\r\n")
        elif verb == "LOGIN":
            conn.send(f"{tag} OK [CAPABILITY {self.capabilities()}] Logged in\r\n")
        elif verb in ("SELECT", "EXAMINE"):
            conn.send(
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n"
                "* 0 EXISTS\r\n* 0 RECENT\r\n"
                f"* OK [UIDVALIDITY {self.UIDVALIDITY}] UIDs valid\r\n"
                f"* OK [UIDNEXT {self.UIDNEXT}] Predicted next UID\r\n"
                f"{tag} OK [READ-WRITE] Select completed.\r\n"
            )
        elif verb == "SEARCH":
            conn.send(f"* SEARCH\r\n{tag} OK Search completed.\r\n")
        elif verb in ("NOOP", "FETCH", "STORE", "EXPUNGE", "CHECK"):
            conn.send(f"{tag} OK {verb.capitalize()} completed.\r\n")
        elif verb == "IDLE":
            conn.send("+ idling\r\n")
            conn.readline()  # DONE
            fault = self.due("DONE")
            if fault is not None and fault.action == "fuzz":
                if not self.fuzz(conn, fault, tag):
                    return False
            elif fault is not None:
                self.misbehave(conn, fault)
                return False
            conn.send(f"{tag} OK Idle completed.\r\n")
        elif verb == "LOGOUT":
            conn.send(f"* BYE Logging out\r\n{tag} OK Logout completed.\r\n")
            return False
        else:
            conn.send(f"{tag} BAD Error in IMAP command {verb}: Unknown command.\r\n")
        return True


class DeliveringImapServer(FakeImapServer):
    """A mailbox that receives what `smtp` (a FakeSmtpServer) accepted: its latest message shows
    as UID PROBE_UID `visible_after` seconds after the fake's 250, until it is expunged.

    announce: a NOOP once the message is visible gets "* 1 EXISTS" (False: the server announces
    nothing, as some do, and only a search finds it). capabilities: instead of "IMAP4rev1 IDLE
    UIDPLUS". flagged: UIDs of other messages that someone else flagged \\Deleted (they answer
    SEARCH DELETED). `commands` holds the commands received, tags stripped ("UID SEARCH ...").
    """

    PROBE_UID = 42
    FIELDS = ("Message-ID", "Subject", "X-PRTG-Roundtrip")

    def __init__(self, smtp: FakeSmtpServer, fault: Optional[Fault] = None, *, announce: bool = True,
                 visible_after: float = 0.0, capabilities: Optional[str] = None, flagged: Tuple[int, ...] = (),
                 tls: Optional[ssl.SSLContext] = None, starttls: Optional[ssl.SSLContext] = None,
                 lifetime: float = LIFETIME):
        self.smtp = smtp
        self.announce = announce
        self.visible_after = visible_after
        self.flagged = tuple(flagged)
        self.expunged = False
        self.announced = False
        if capabilities is not None:
            self.CAPABILITIES = capabilities
        super().__init__(fault, tls=tls, lifetime=lifetime, starttls=starttls)

    @property
    def commands(self) -> List[str]:
        return [line.split(" ", 1)[1] for line in self.received if " " in line]

    def _probe(self) -> bytes:
        """The message, if it is in the mailbox now."""
        if self.expunged or not self.smtp.messages or not self.smtp.accepted_at:
            return b""
        if time.monotonic() - self.smtp.accepted_at[-1] < self.visible_after:
            return b""
        return self.smtp.messages[-1]

    def _answer(self, conn: Connection, tag: str, verb: str) -> bool:
        line = self.received[-1].upper()
        probe = self._probe()
        if verb == "SEARCH":
            if " DELETED" in line:
                found = " ".join(str(u) for u in self.flagged)
            else:
                found = str(self.PROBE_UID) if probe else ""
            conn.send(f"* SEARCH {found}".rstrip() + f"\r\n{tag} OK Search completed.\r\n")
            return True
        if verb == "NOOP" and probe and self.announce and not self.announced:
            self.announced = True
            conn.send(f"* 1 EXISTS\r\n* 1 RECENT\r\n{tag} OK Noop completed.\r\n")
            return True
        if verb == "FETCH" and probe:
            headers = message_from_bytes(probe)
            wanted = "".join(f"{name}: {headers[name]}\r\n" for name in self.FIELDS if headers[name] is not None)
            body = (wanted + "\r\n").encode()
            conn.send(f"* 1 FETCH (UID {self.PROBE_UID} BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT X-PRTG-ROUNDTRIP)] "
                      f"{{{len(body)}}}\r\n".encode() + body + f")\r\n{tag} OK Fetch completed.\r\n".encode())
            return True
        if verb == "EXPUNGE" and probe:
            self.expunged = True
            conn.send(f"* 1 EXPUNGE\r\n{tag} OK Expunge completed.\r\n")
            return True
        return super()._answer(conn, tag, verb)


class DelayingRelay(LoopbackListener):
    """A TCP relay on 127.0.0.1 in front of a real server (`target_host`, `target_port`).

    Bytes pass both ways unchanged, except that the server's first answer after the client sent
    `trigger` (by default the end of an SMTP message, CRLF . CRLF) is held back for `delay`
    seconds: a server slow to answer DATA. `held` counts the answers held.
    """

    name = "relay"

    def __init__(self, target_host: str, target_port: int, delay: float, trigger: bytes = b"\r\n.\r\n",
                 lifetime: float = LIFETIME):
        self.target = (target_host, target_port)
        self.delay = delay
        self.trigger = trigger
        self.held = 0
        self._listen(lifetime)

    def _accepted(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self._track(client, server)
        triggered = threading.Event()
        threading.Thread(target=self._upstream, args=(client, server, triggered), daemon=True).start()
        threading.Thread(target=self._downstream, args=(server, client, triggered), daemon=True).start()

    def _recv(self, sock: socket.socket) -> bytes:
        sock.settimeout(POLL)
        while not self._stopping.is_set():
            try:
                return sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return b""

    def _upstream(self, client: socket.socket, server: socket.socket, triggered: threading.Event) -> None:
        tail = b""
        while True:
            data = self._recv(client)
            if not data:
                break
            seen = tail + data
            if self.trigger in seen:
                triggered.set()  # before the server can have the trigger, so before its answer
                seen = seen[seen.rindex(self.trigger) + len(self.trigger):]  # each trigger counts once
            tail = seen[-len(self.trigger):]
            try:
                server.sendall(data)
            except OSError:
                break
        _shut(server)

    def _downstream(self, server: socket.socket, client: socket.socket, triggered: threading.Event) -> None:
        while True:
            data = self._recv(server)
            if not data:
                break
            if triggered.is_set():
                triggered.clear()
                with self._lock:
                    self.held += 1
                if self._stopping.wait(self.delay):
                    break
            try:
                client.sendall(data)
            except OSError:
                break
        _shut(client)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# -- ports that do not answer as ports do -------------------------------------------------


class RefusingPort:
    """A port on 127.0.0.1 that refuses connections: bound (so nothing else takes it), not listening."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self.host: str = HOST
        self.port: int = self._sock.getsockname()[1]

    def stop(self) -> None:
        self._sock.close()


class HangingPort:
    """A port on 127.0.0.1 where connect() neither succeeds nor fails, like a firewall that drops.

    The listener has a backlog of 0 and never accepts; one connection fills its accept queue.
    Linux then drops every further SYN (with net.ipv4.tcp_abort_on_overflow = 0, the default), so
    the client retransmits its SYN and waits until its own timeout. `hangs` says whether this
    worked here: a probe connect is tried with a short timeout (tcp_abort_on_overflow = 1 makes
    the kernel refuse instead, and then there is no hanging connect on loopback without root).
    """

    PROBE_TIMEOUT = 0.3
    MAX_FILLERS = 8

    def __init__(self, lifetime: float = LIFETIME):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((HOST, 0))
        self._listener.listen(0)
        self.host: str = HOST
        self.port: int = self._listener.getsockname()[1]
        self._fillers: List[socket.socket] = []
        self.hangs = False
        for _ in range(self.MAX_FILLERS):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(self.PROBE_TIMEOUT)
            try:
                probe.connect((self.host, self.port))
            except socket.timeout:
                probe.close()
                self.hangs = True
                break
            except OSError:
                probe.close()
                break
            self._fillers.append(probe)  # it got in: it fills the queue now
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        self._timer.cancel()
        for sock in [*self._fillers, self._listener]:
            sock.close()
        self._fillers = []


# -- TLS ------------------------------------------------------------------------------------

# The same certificate profile as the stack's own (Python 3.13's strict verification wants it).
LEAF_EXTENSIONS = mailstack.TLS_LEAF_EXTENSIONS
SERVER_SAN = mailstack.SERVER_SAN
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def server_context(cert: Union[str, Path], key: Union[str, Path]) -> ssl.SSLContext:
    """A server context presenting `cert`, TLS 1.2 or newer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def old_protocol_context(cert: Union[str, Path], key: Union[str, Path]) -> ssl.SSLContext:
    """A server that speaks only TLS 1.0 and 1.1, as old appliances do: no common version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(str(cert), str(key))
    return context


def _openssl(*args: str, cwd: Optional[Path] = None) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr.decode(errors='replace')}")


def issue_expired_certificate(tls_dir: Path, name: str, ca_file: Union[str, Path], ca_key: Union[str, Path],
                              san: str = SERVER_SAN) -> Tuple[Path, Path]:
    """(cert, key): right host names, signed by the CA, valid only in January 2020.

    `openssl x509 -req` of OpenSSL 3.0 cannot set a start date; `openssl ca` can.
    """
    work = tls_dir / f"{name}-ca"
    (work / "new").mkdir(parents=True, exist_ok=True)
    (work / "index.txt").write_text("")
    (work / "serial").write_text("1000\n")
    (work / "ca.cnf").write_text(
        "[ca]\ndefault_ca = fake\n"
        "[fake]\ndatabase = index.txt\nnew_certs_dir = new\nserial = serial\ndefault_md = sha256\n"
        "policy = anything\nunique_subject = no\n"
        "[anything]\ncommonName = supplied\norganizationName = optional\n"
    )
    (work / "ext.cnf").write_text(LEAF_EXTENSIONS.format(san=san))
    key, cert = tls_dir / f"{name}.key", tls_dir / f"{name}.pem"
    first_name = san.split(",")[0].split(":", 1)[-1].strip()
    _openssl("req", "-new", *EC_KEY, "-keyout", str(key), "-out", "req.csr",
             "-subj", f"/O=prtg-roundtrip/CN={first_name}", cwd=work)
    _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", str(ca_file), "-keyfile", str(ca_key),
             "-in", "req.csr", "-out", str(cert), "-startdate", "20200101000000Z",
             "-enddate", "20200201000000Z", "-extfile", "ext.cnf", "-notext", cwd=work)
    return cert, key


def make_self_signed_certificate(tls_dir: Path, name: str, san: str = SERVER_SAN) -> Tuple[Path, Path]:
    """(cert, key): right host names and dates, signed by nobody but itself."""
    key, cert = tls_dir / f"{name}.key", tls_dir / f"{name}.pem"
    first_name = san.split(",")[0].split(":", 1)[-1].strip()
    _openssl("req", "-x509", *EC_KEY, "-keyout", str(key), "-out", str(cert), "-days", "30",
             "-subj", f"/O=prtg-roundtrip self-signed/CN={first_name}", "-addext", f"subjectAltName={san}")
    return cert, key

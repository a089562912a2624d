"""TLS for both legs: the certificate policy, the TLS-mode policy, and what a failure means.

Certificates and host names are verified unless the administrator says --insecure; TLS 1.2 is
the minimum. A certificate or handshake failure is never a reason to fall back to plain text:
only a server that does not speak TLS at all (implicit TLS answered in plain text) or does not
announce STARTTLS lets an "if available" mode continue without it. `secure()` is that policy,
the same for SMTP and IMAP; each leg supplies a small `Connector` for its protocol.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Optional, Tuple

from .deadline import Deadline, note_step
from .settings import TlsMode, TlsSettings
from .sockets import after_handshake
from .transcript import Transcript


class TlsUnavailable(Exception):
    """The server answered a TLS handshake in plain text: it does not offer TLS on this port."""


@lru_cache(maxsize=4)
def make_context(policy: TlsSettings) -> ssl.SSLContext:
    """The verifying context for `policy`; both legs share one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=system_ca_directory())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if policy.ca_file:
        context.load_verify_locations(cafile=policy.ca_file)
    if policy.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # What a handshake and its certificate check would otherwise import and compile inside a
    # measured leg (about 2 ms): the IDNA codec for server_hostname, strptime for the expiry.
    "localhost".encode("idna")
    ssl.cert_time_to_seconds("Jan  1 00:00:00 2000 GMT")
    return context


def system_ca_directory() -> Optional[str]:
    """The system's trusted CAs as a hashed directory, where OpenSSL has one (Linux), else None.

    Loading the system's CA bundle file parses every certificate in it: about 20 ms of CPU a
    run (a third of the sensor's start-up). A hashed directory (`c_rehash`, Debian's
    /etc/ssl/certs, the same CAs as its bundle) is read only for the issuer a verification
    needs. Where there is none, or SSL_CERT_FILE names another file than the system's bundle,
    None: the defaults load as usual (on Windows that is the system store, which has no
    directory form).
    """
    import os
    import re

    paths = ssl.get_default_verify_paths()
    if sys.platform == "win32" or not paths.capath:
        return None
    named = os.environ.get(paths.openssl_cafile_env)
    if named and os.path.realpath(named) != os.path.realpath(paths.openssl_cafile):
        return None
    try:
        with os.scandir(paths.capath) as entries:
            if any(re.fullmatch(r"[0-9a-f]{8}\.[0-9]+", entry.name) for entry in entries):
                return paths.capath
    except OSError:
        pass
    return None


# OpenSSL reasons meaning "the peer does not speak TLS here", as opposed to a TLS server whose
# handshake or certificate failed.
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "UNEXPECTED_RECORD",
    }
)


def peer_is_not_tls(exc: BaseException) -> bool:
    """True when a handshake failed because the server speaks plain text on that port."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in _NOT_TLS_REASONS


@dataclass(frozen=True)
class Security:
    """How one leg's connection was secured: the value both legs report and the text shows."""

    version: Optional[str] = None  # e.g. "TLSv1.3"; None: plain text
    implicit: bool = False  # TLS from the first byte (SMTPS/IMAPS) rather than STARTTLS
    certificate_days: Optional[float] = None  # days until the verified certificate expires
    fallback: Optional[str] = None  # why an "if available" mode went on without TLS
    cipher: Optional[str] = None  # the negotiated cipher suite, e.g. "TLS_AES_256_GCM_SHA384"
    certificate_subject: Optional[str] = None  # the verified certificate's subject (its CN), if any
    certificate_expires: Optional[float] = None  # its notAfter as a Unix timestamp

    @property
    def encrypted(self) -> bool:
        return self.version is not None

    def __str__(self) -> str:
        if self.version is None:
            return "plain text"
        return f"{self.version} ({'implicit TLS' if self.implicit else 'STARTTLS'})"

    @classmethod
    def of(cls, sock: object, implicit: bool, fallback: Optional[str] = None) -> Security:
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            expires = certificate_expires(sock)
            return cls(
                sock.version() or "TLS", implicit, certificate_days_left(sock), fallback,
                cipher=cipher[0] if cipher else None,
                certificate_subject=certificate_subject(sock),
                certificate_expires=expires,
            )
        return cls(fallback=fallback)


@dataclass(frozen=True)
class Leg:
    """What the TLS policy says differently per protocol."""

    protocol: str  # "SMTP" / "IMAP", as the transcript names it
    option: str  # "--smtp-tls"
    implicit_port: int  # 465 / 993


SMTP_LEG = Leg("SMTP", "--smtp-tls", 465)
IMAP_LEG = Leg("IMAP", "--imap-tls", 993)


class Connector:
    """One leg's connection: its protocol's part of securing it (smtp_send and imap_session
    implement it), and the phase it is in, which names the step in errors and, through
    deadline.note_step, in the last-resort and SIGTERM documents."""

    leg: Leg

    def __init__(self, settings: Any, tls: TlsSettings, deadline: Deadline, transcript: Transcript):
        self.settings = settings  # the leg's: .server, .tls, .timeout
        self.deadline = deadline
        self.transcript = transcript
        self.context: Optional[ssl.SSLContext] = make_context(tls) if settings.tls is not TlsMode.OFF else None
        self.phase = "connect"
        self.phase_timeout = deadline.cap(settings.timeout)

    def socket_opened(self, sock: Any) -> None:
        """Every new socket (after the handshake, for implicit TLS): the budget's watchdog,
        and the socket option that path needs (sockets.py)."""
        if isinstance(sock, ssl.SSLSocket):
            after_handshake(sock)
        self.deadline.guard(sock)
        self.phase = "greeting"

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        self._phase = value
        note_step(f"the {self.leg.protocol} leg ({self.settings.server}): {value}")

    def connect(self, implicit: bool) -> None:
        """Open a connection (closing any earlier one) and read the greeting; with `implicit`,
        raise TlsUnavailable when the port answers the handshake in plain text."""
        raise NotImplementedError

    def offers_starttls(self) -> bool:
        raise NotImplementedError

    def starttls(self) -> None:
        raise NotImplementedError

    def socket(self) -> Any:
        raise NotImplementedError


def secure(conn: Connector, mode: TlsMode, transcript: Transcript, fail: Callable[[str, str], Exception]) -> Security:
    """Connect under `mode`: the one TLS policy of both legs. `fail(cause, hint)` makes the
    leg's error; it is raised where TLS is required but missing."""
    leg = conn.leg
    fallback = None
    try:
        conn.connect(implicit=mode.implicit)
    except TlsUnavailable as exc:
        if mode.required:
            raise fail(
                f"TLS not offered on this port ({exc})",
                f"The port speaks plain text: use {leg.option} starttls, or the server's implicit-TLS "
                f"port ({leg.implicit_port})",
            ) from None
        fallback = "the port does not speak implicit TLS"
        transcript.note(leg.protocol, f"{fallback}: reconnecting without implicit TLS")
        conn.connect(implicit=False)
    if not isinstance(conn.socket(), ssl.SSLSocket) and mode is not TlsMode.OFF:
        if conn.offers_starttls():
            conn.starttls()  # a failed handshake raises: never a plain-text retry
        elif mode is TlsMode.STARTTLS:
            raise fail(
                "TLS not offered: the server does not announce STARTTLS",
                f"Enable STARTTLS on the server, or choose {leg.option} starttls-if-available",
            )
        else:
            fallback = fallback or "the server does not announce STARTTLS"
            transcript.note(leg.protocol, f"{fallback}: continuing without TLS")
    return Security.of(conn.socket(), implicit=mode.implicit and fallback is None, fallback=fallback)


def certificate_expires(sock: object) -> Optional[float]:
    """When the verified peer certificate expires (Unix time), where one was verified."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not not_after:
        return None
    return float(ssl.cert_time_to_seconds(str(not_after)))


def certificate_days_left(sock: object) -> Optional[float]:
    """Days until the verified peer certificate expires, where one was verified."""
    expires = certificate_expires(sock)
    return None if expires is None else (expires - time.time()) / 86400.0


def certificate_subject(sock: object) -> Optional[str]:
    """The verified peer certificate's subject in words: its common name(s), else the whole
    subject as key=value pairs (None without a verified certificate, e.g. with --insecure)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    subject = cert.get("subject") if cert else None
    if not subject:
        return None
    pairs = [(str(pair[0]), str(pair[1])) for rdn in subject for pair in rdn if len(pair) == 2]
    names = [value for key, value in pairs if key == "commonName"]
    return ", ".join(names) if names else ", ".join(f"{key}={value}" for key, value in pairs)


def describe_network_error(exc: BaseException, timeout: Optional[float] = None) -> Tuple[str, str]:
    """(cause, what to try) for a socket or TLS exception, in an administrator's words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return (
            f"the server's certificate is not trusted ({detail})",
            "Use a certificate that matches the host name and chains to a trusted CA, give its CA "
            "with --ca-file, or (not recommended) turn checking off with --insecure",
        )
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        if peer_is_not_tls(exc):
            return (
                f"the server did not answer with TLS ({reason})",
                "This port may expect STARTTLS or plain text: check the port and the TLS mode",
            )
        return (
            f"the TLS handshake failed ({reason})",
            "Check the server's TLS configuration; the sensor requires TLS 1.2 or newer",
        )
    if isinstance(exc, socket.gaierror):
        return ("unknown host: the name could not be resolved", "Check the host name and DNS")
    if isinstance(exc, ConnectionRefusedError):
        return (
            "connection refused",
            "Check that the server runs and listens on this port, and that no firewall rejects it",
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        after = f" within {timeout:.1f} s" if timeout else ""
        return (
            f"no answer{after} (timed out)",
            "Check that the server is reachable and responsive; a firewall that drops packets "
            "looks like this too",
        )
    if isinstance(exc, ConnectionResetError):
        return ("the server reset the connection", "Check the server's log and connection limits")
    if isinstance(exc, (EOFError, ConnectionAbortedError, BrokenPipeError)):
        return ("the server closed the connection unexpectedly", "Check the server's log")
    if isinstance(exc, OSError):
        return (f"network error ({exc.strerror or exc})", "Check the network path to the server")
    return (f"{type(exc).__name__}: {exc}", "Run the sensor by hand with --format text --verbose")

"""TLS for both legs: the certificate policy and what a TLS failure means.

Certificates and host names are verified unless the administrator says --insecure; TLS 1.2 is
the minimum. A certificate failure is never a reason to fall back to plain text: only a server
that does not speak TLS at all lets an "if available" mode continue without it.
"""

from __future__ import annotations

import socket
import ssl
import time
from functools import lru_cache
from typing import Optional, Tuple

from .settings import TlsSettings


class TlsUnavailable(Exception):
    """The server answered a TLS handshake in plain text: it does not offer TLS on this port."""


@lru_cache(maxsize=4)
def make_context(policy: TlsSettings) -> ssl.SSLContext:
    """The verifying context for `policy`; both legs share one (loading CA stores is slow)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if policy.ca_file:
        context.load_verify_locations(cafile=policy.ca_file)
    if policy.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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


def session_description(sock: object) -> str:
    """'TLSv1.3' for a TLS socket, 'plain text' otherwise."""
    if isinstance(sock, ssl.SSLSocket):
        return sock.version() or "TLS"
    return "plain text"


def certificate_days_left(sock: object) -> Optional[float]:
    """Days until the verified peer certificate expires, where one was verified."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not not_after:
        return None
    return (ssl.cert_time_to_seconds(str(not_after)) - time.time()) / 86400.0


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

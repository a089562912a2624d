"""Step 1: hand the probe mail to the SMTP server and note when it was accepted.

Uses stdlib smtplib, one command at a time, so that every phase has its own timestamp and every
refusal names the command and the server's reply. The SMTP leg runs from the start of the
connection to the server's 250 after DATA.
"""

from __future__ import annotations

import ast
import smtplib
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Optional

from .deadline import Deadline, now
from .errors import SendUncertain, SmtpError
from .probe import ProbeMail
from .settings import SmtpAuth, SmtpSettings, TlsMode, TlsSettings
from .sockets import tune
from .tls import (
    TlsUnavailable,
    certificate_days_left,
    describe_network_error,
    make_context,
    peer_is_not_tls,
    session_description,
)
from .transcript import Transcript


@dataclass(frozen=True)
class SendResult:
    """What step 1 observed. Times are `deadline.now()` seconds."""

    server: str
    started_at: float  # before the TCP connect
    connected_at: float  # greeting (220) read, TLS included for implicit TLS
    tls_started_at: Optional[float]  # STARTTLS sent (None without STARTTLS)
    tls_done_at: Optional[float]  # STARTTLS handshake finished and EHLO repeated
    auth_started_at: Optional[float]  # AUTH sent (None without auth)
    authenticated_at: Optional[float]  # AUTH accepted
    ready_at: float  # before MAIL FROM
    accepted_at: float  # 250 after DATA: the server took responsibility for the mail
    security: str  # e.g. "TLSv1.3 (STARTTLS)", "TLSv1.3 (implicit TLS)", "plain text"
    reply: str  # the server's answer to DATA, e.g. "2.0.0 Ok: queued as 4Xyz"
    certificate_days: Optional[float] = None
    password_in_clear: bool = False
    fallback: Optional[str] = None  # why an "if available" mode went without TLS


class _SMTP(smtplib.SMTP):
    """smtplib, with its debug output routed into the transcript and the end of DATA timed."""

    transcript: Transcript
    session: _Session
    _host: str  # smtplib's name for the host it verifies the certificate against
    payload_sent_at: Optional[float] = None  # the final "." of the message went out

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self.session.socket_opened(sock)
        return sock

    def send(self, s: Any) -> None:  # str or bytes, as smtplib passes them
        super().send(s)
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.payload_sent_at = now()

    def _print_debug(self, *args: object) -> None:
        if len(args) != 2 or args[0] not in ("send:", "reply:"):
            return
        text = str(args[1])
        try:
            value = ast.literal_eval(text)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            text = str(value)
        except (ValueError, SyntaxError):
            pass
        if args[0] == "send:" and len(text) > 300:
            text = f"<message data, {len(text)} bytes>"
        self.transcript.add("SMTP", ">" if args[0] == "send:" else "<", text)


class _SMTPS(_SMTP, smtplib.SMTP_SSL):
    pass


class _Session:
    """One SMTP conversation; raises SmtpError naming the phase that failed."""

    def __init__(self, settings: SmtpSettings, tls: TlsSettings, deadline: Deadline, transcript: Transcript):
        self.settings = settings
        self.deadline = deadline
        self.transcript = transcript
        self.context: Optional[ssl.SSLContext] = make_context(tls) if settings.tls is not TlsMode.OFF else None
        self.conn: Optional[_SMTP] = None
        self.phase = "connect"
        self.phase_timeout = self._timeout()

    # -- failures -------------------------------------------------------------------------
    def fail(self, cause: str, hint: str) -> SmtpError:
        return SmtpError(cause, server=self.settings.server, hint=hint)

    def network_failure(self, exc: BaseException) -> SmtpError:
        if self.deadline.fired:
            return self.fail(*self.deadline.ran_out(self.phase))
        if isinstance(exc, smtplib.SMTPResponseException):
            return self.refused(f"{self.phase} refused", exc.smtp_code, exc.smtp_error)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            if isinstance(exc.__context__, (socket.timeout, TimeoutError)):
                exc = exc.__context__
            else:
                return self.fail(
                    f"the server closed the connection during {self.phase}",
                    "Check the server's log; it may limit connections or reject this client",
                )
        cause, hint = describe_network_error(exc, self.phase_timeout)
        return self.fail(f"{cause} during {self.phase}", hint)

    def refused(self, what: str, code: int, msg: object) -> SmtpError:
        if not 200 <= code <= 599:  # smtplib's -1: a line that is no SMTP reply at all
            return self.fail(
                f"unexpected reply during {self.phase}, not SMTP: {_text(msg)[:120]!r}",
                "Check that the port belongs to an SMTP server (and the TLS mode: implicit TLS or not)",
            )
        return self.fail(f"{what}: {_reply(code, msg)}", _refusal_hint(code))

    def _timeout(self) -> float:
        return self.deadline.cap(self.settings.timeout)

    def _set_timeout(self) -> None:
        self.phase_timeout = self._timeout()
        if self.conn is not None and self.conn.sock is not None:
            self.conn.sock.settimeout(self.phase_timeout)
            self.deadline.guard(self.conn.sock)  # again after STARTTLS: a new socket object

    def socket_opened(self, sock: socket.socket) -> None:
        tune(sock)
        self.deadline.guard(sock)
        self.phase = "greeting"

    # -- phases ---------------------------------------------------------------------------
    def connect(self, implicit: bool) -> None:
        self.phase = "connect (TLS handshake)" if implicit else "connect"
        helo, timeout = self.settings.helo, self._timeout()
        self.phase_timeout = timeout
        conn: _SMTP
        if implicit:
            conn = _SMTPS(local_hostname=helo, timeout=timeout, context=self.context)
        else:
            conn = _SMTP(local_hostname=helo, timeout=timeout)
        conn.transcript = self.transcript
        conn.session = self
        conn._host = self.settings.host
        conn.set_debuglevel(1)
        self.conn = conn
        self.transcript.note("SMTP", f"connecting to {self.settings.server}" + (" with TLS" if implicit else ""))
        try:
            code, msg = conn.connect(self.settings.host, self.settings.port)
        except (OSError, smtplib.SMTPException) as exc:
            if implicit and peer_is_not_tls(exc):
                raise TlsUnavailable(str(exc)) from exc
            raise self.network_failure(exc) from exc
        if code != 220:
            raise self.refused("the server refused the session at its greeting", code, msg)

    def hello(self) -> None:
        assert self.conn is not None
        self.phase = "EHLO"
        self._set_timeout()
        code, msg = self.conn.ehlo()
        if code == -1:
            raise self.refused("EHLO", code, msg)
        if code != 250:
            code, msg = self.conn.helo()
            if code != 250:
                if not 200 <= code <= 599:
                    raise self.refused("HELO", code, msg)
                raise self.fail(
                    f"EHLO/HELO rejected: {_reply(code, msg)}",
                    "Check the HELO ident (--helo); some servers demand this host's valid DNS name",
                )

    def starttls(self) -> None:
        assert self.conn is not None
        self.phase = "STARTTLS"
        self._set_timeout()
        code, msg = self.conn.starttls(context=self.context)
        if code != 220:
            raise self.refused("STARTTLS refused", code, msg)
        self.hello()

    def authenticate(self, user: str, password: str) -> None:
        assert self.conn is not None
        self.phase = "AUTH"
        self._set_timeout()
        if not self.conn.has_extn("auth"):
            raise self.fail(
                "the server offers no authentication (AUTH) on this connection",
                "Many servers offer AUTH only after STARTTLS or on the submission port 587: "
                "check --smtp-tls and --smtp-port, or use --smtp-auth none",
            )
        try:
            self.conn.login(user, password)
        except smtplib.SMTPAuthenticationError as exc:
            if not 200 <= exc.smtp_code <= 599:
                raise self.refused("AUTH", exc.smtp_code, exc.smtp_error) from None
            raise self.fail(
                f"login rejected: {_reply(exc.smtp_code, exc.smtp_error)}",
                "Check --smtp-user and --smtp-password",
            ) from None
        except smtplib.SMTPException as exc:
            if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException)):
                raise
            raise self.fail(f"authentication failed: {exc}", "Check the mechanisms the server offers") from None

    def submit(self, probe: ProbeMail) -> str:
        assert self.conn is not None
        self.phase = "MAIL FROM"
        self._set_timeout()
        code, msg = self.conn.mail(probe.sender)
        if code != 250:
            raise self.refused(f"sender <{probe.sender}> rejected at MAIL FROM", code, msg)
        self.phase = "RCPT TO"
        code, msg = self.conn.rcpt(probe.recipient)
        if code not in (250, 251):
            raise self.refused(f"recipient <{probe.recipient}> rejected at RCPT TO", code, msg)
        self.phase = "DATA"
        try:
            code, msg = self.conn.data(probe.data)
        except smtplib.SMTPDataError as exc:  # before OSError: every SMTPException is an OSError
            raise self.refused("DATA refused", exc.smtp_code, exc.smtp_error) from None
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            sent_at = self.conn.payload_sent_at
            if sent_at is None:
                raise
            raise SendUncertain(
                "send uncertain: the whole message went out, but the server did not confirm it after DATA "
                f"({self._broken_because(exc)})",
                server=self.settings.server,
                sent_at=sent_at,
            ) from exc
        if code != 250:
            raise self.refused("message rejected after DATA", code, msg)
        return _text(msg)

    def _broken_because(self, exc: BaseException) -> str:
        if self.deadline.fired:
            return f"the run's --timeout budget of {self.deadline.budget:g} s ran out"
        if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
            exc.__context__, (socket.timeout, TimeoutError)
        ):
            exc = exc.__context__
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"no answer within {self.phase_timeout:.1f} s"
        return "it closed the connection"

    def close(self) -> None:
        if self.conn is None:
            return
        try:
            if self.conn.sock is not None:
                self.conn.sock.settimeout(min(2.0, self.deadline.cap(2.0)))
                self.conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            self.conn.close()
            self.conn = None


def send_probe(
    settings: SmtpSettings, tls: TlsSettings, probe: ProbeMail, deadline: Deadline, transcript: Transcript
) -> SendResult:
    """Deliver `probe` to the SMTP server; return when the server accepted it (250 after DATA)."""
    session = _Session(settings, tls, deadline, transcript)
    started = now()
    fallback = None
    try:
        try:
            session.connect(implicit=settings.tls.implicit)
        except TlsUnavailable as exc:
            if settings.tls.required:
                raise session.fail(
                    f"TLS not offered on this port ({exc})",
                    "The port speaks plain text: use --smtp-tls starttls, or the server's "
                    "implicit-TLS port (465)",
                ) from None
            fallback = "the port does not speak implicit TLS"
            transcript.note("SMTP", f"{fallback}: reconnecting without implicit TLS")
            session.close()
            session.connect(implicit=False)
        connected = now()
        session.hello()
        tls_started = tls_done = None
        assert session.conn is not None
        if not settings.tls.implicit or fallback:
            if settings.tls is not TlsMode.OFF and session.conn.has_extn("starttls"):
                tls_started = now()
                session.starttls()
                tls_done = now()
            elif settings.tls is TlsMode.STARTTLS:
                raise session.fail(
                    "TLS not offered: the server does not announce STARTTLS",
                    "Enable STARTTLS on the server, or choose --smtp-tls starttls-if-available",
                )
            elif settings.tls is not TlsMode.OFF:
                fallback = fallback or "the server does not announce STARTTLS"
                transcript.note("SMTP", f"{fallback}: continuing without TLS")
        security = session_description(session.conn.sock)
        if security != "plain text":
            security += " (STARTTLS)" if tls_done is not None else " (implicit TLS)"
        auth_started = authenticated = None
        in_clear = False
        if settings.auth is SmtpAuth.PASSWORD:
            in_clear = security == "plain text"
            if in_clear:
                transcript.note("SMTP", "WARNING: sending the password without TLS")
            auth_started = now()
            session.authenticate(settings.user or "", settings.password or "")
            authenticated = now()
        ready = now()
        reply = session.submit(probe)
        accepted = now()
        days = certificate_days_left(session.conn.sock)
    except (OSError, smtplib.SMTPException) as exc:
        raise session.network_failure(exc) from exc
    finally:
        session.close()
    return SendResult(
        server=settings.server,
        started_at=started,
        connected_at=connected,
        tls_started_at=tls_started,
        tls_done_at=tls_done,
        auth_started_at=auth_started,
        authenticated_at=authenticated,
        ready_at=ready,
        accepted_at=accepted,
        security=security,
        reply=reply,
        certificate_days=days,
        password_in_clear=in_clear,
        fallback=fallback,
    )


def _text(msg: object) -> str:
    if isinstance(msg, bytes):
        return msg.decode("utf-8", "replace")
    return str(msg)


def _reply(code: object, msg: object) -> str:
    return f"{code} {_text(msg)}".strip()


def _refusal_hint(code: int) -> str:
    if 400 <= code < 500:
        return "A temporary refusal (4xx): greylisting, rate limits or a full queue; check the server's log"
    return (
        "A permanent refusal: check that the server accepts this sender and relays to this "
        "recipient for this client (or enable --smtp-auth password)"
    )


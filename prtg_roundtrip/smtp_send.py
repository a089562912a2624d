"""Step 1: hand the probe mail to the SMTP server and note when it was accepted.

Uses stdlib smtplib, one command at a time, so that every phase has its own timestamp and every
refusal names the command and the server's reply. The SMTP leg runs from the start of the
connection to the server's 250 after DATA.
"""

from __future__ import annotations

import ast
import base64
import smtplib
import socket
from dataclasses import dataclass
from typing import Any, List, Optional

from . import sasl
from .auth import BearerLogin, Login, NoAuth, PasswordAuth
from .deadline import Deadline, now
from .errors import SendUncertain, SmtpError
from .probe import ProbeMail
from .settings import SmtpSettings, TlsSettings
from .tls import (
    SMTP_LEG,
    Connector,
    Security,
    TlsUnavailable,
    describe_network_error,
    peer_is_not_tls,
    secure,
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
    security: Security
    reply: str  # the server's answer to DATA, e.g. "2.0.0 Ok: queued as 4Xyz"
    auth: str = "none"  # how the sensor logged in: "none", "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"


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


class _Session(Connector):
    """One SMTP conversation; raises SmtpError naming the phase that failed."""

    leg = SMTP_LEG

    def __init__(self, settings: SmtpSettings, tls: TlsSettings, deadline: Deadline, transcript: Transcript):
        super().__init__(settings, tls, deadline, transcript)
        self.conn: Optional[_SMTP] = None
        self.greeted = False  # EHLO/HELO answered on the current connection
        self.connected_at = 0.0
        self.tls_started_at: Optional[float] = None
        self.tls_done_at: Optional[float] = None
        self.auth_method = "none"  # the mechanism of a login that was attempted
        self.auth_started_at: Optional[float] = None  # AUTH sent
        self.authenticated_at: Optional[float] = None  # AUTH accepted

    # -- failures -------------------------------------------------------------------------
    def fail(self, cause: str, hint: str, token_refused: bool = False) -> SmtpError:
        return SmtpError(cause, server=self.settings.server, hint=hint, token_refused=token_refused)

    def network_failure(self, exc: BaseException) -> SmtpError:
        if self.deadline.fired or self.phase_timeout < 0.05:  # (a command the budget left no time)
            return self.fail(*self.deadline.ran_out(self.phase))
        if isinstance(exc, smtplib.SMTPResponseException):
            if exc.smtp_code == 500 and _text(exc.smtp_error) == "Line too long.":  # smtplib's own, not a reply
                return self.fail(
                    f"unexpected reply during {self.phase}: a line longer than smtplib's limit, not SMTP",
                    "Check that the port belongs to an SMTP server (and the TLS mode: implicit TLS or not)",
                )
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

    # -- the TLS policy's connector (tls.secure) --------------------------------------------
    def connect(self, implicit: bool) -> None:
        self.close()
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
        self.conn, self.greeted = conn, False
        self.transcript.note("SMTP", f"connecting to {self.settings.server}" + (" with TLS" if implicit else ""))
        try:
            code, msg = conn.connect(self.settings.host, self.settings.port)
        except (OSError, smtplib.SMTPException) as exc:
            if implicit and peer_is_not_tls(exc):
                raise TlsUnavailable(str(exc)) from exc
            raise self.network_failure(exc) from exc
        if code != 220:
            raise self.refused("the server refused the session at its greeting", code, msg)
        self.connected_at = now()

    def offers_starttls(self) -> bool:
        self.hello()
        assert self.conn is not None
        return bool(self.conn.has_extn("starttls"))

    def starttls(self) -> None:
        assert self.conn is not None
        self.phase = "STARTTLS"
        self.tls_started_at = now()
        self._set_timeout()
        code, msg = self.conn.starttls(context=self.context)
        if code != 220:
            raise self.refused("STARTTLS refused", code, msg)
        self.greeted = False
        self.hello()
        self.tls_done_at = now()

    def socket(self) -> Any:
        return self.conn.sock if self.conn is not None else None

    # -- phases ---------------------------------------------------------------------------
    def open(self, login: Login, cleartext: Optional[List[str]] = None) -> Security:
        """Connect under the TLS policy, greet, and log in as `login` asks: ready for MAIL FROM.
        Socket and smtplib errors pass through (the caller turns them into network_failure).
        `cleartext`, if given, collects a note when a password goes out without TLS."""
        security = secure(self, self.settings.tls, self.transcript, self.fail)
        self.hello()
        if not isinstance(login, NoAuth):
            if isinstance(login, PasswordAuth) and not security.encrypted:
                self.transcript.note("SMTP", "WARNING: sending the password without TLS")
                if cleartext is not None:
                    cleartext.append("the SMTP password was sent without TLS")
            self.auth_started_at = now()
            self.authenticate(login, security)
            self.authenticated_at = now()
        return security

    def hello(self) -> None:
        """EHLO (HELO where EHLO is refused), once per connection and after STARTTLS."""
        assert self.conn is not None
        if self.greeted:
            return
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
        self.greeted = True

    def authenticate(self, login: Login, security: Security) -> None:
        """Log in with the mechanism `login` calls for and the server offers."""
        assert self.conn is not None
        self.phase = "AUTH"
        self._set_timeout()
        if not self.conn.has_extn("auth"):
            raise self.fail(
                "the server offers no authentication (AUTH) on this connection",
                "Many servers offer AUTH only after STARTTLS or on the submission port 587: "
                "check --smtp-tls and --smtp-port, or use --smtp-auth none",
            )
        offered = (self.conn.esmtp_features.get("auth") or "").upper().split()
        if isinstance(login, PasswordAuth):
            self._password(login, offered)
        else:
            assert isinstance(login, BearerLogin)
            self._bearer(login, offered, security)

    def _password(self, login: PasswordAuth, offered: List[str]) -> None:
        assert self.conn is not None
        if "PLAIN" in offered or "LOGIN" not in offered:
            self.auth_method = "PLAIN"
            code, msg = self.conn.docmd("AUTH", "PLAIN " + _b64(sasl.plain(login.user, login.password)))
            if code == 334:  # a challenge although the response went with the command: not SMTP AUTH
                self.conn.docmd("*")  # RFC 4954: cancel the exchange
                raise self.fail(
                    f"unexpected challenge to AUTH PLAIN: {_reply(code, msg)[:120]}",
                    "Check that the port belongs to an SMTP server that implements AUTH (RFC 4954)",
                )
        else:
            self.auth_method = "LOGIN"
            code, msg = self.conn.docmd("AUTH", "LOGIN")
            for answer in (login.user, login.password):
                if code != 334:
                    break
                code, msg = self.conn.docmd(_b64(answer.encode("utf-8")))
        if code != 235:
            if not 200 <= code <= 599:
                raise self.refused("AUTH", code, msg)
            raise self.fail(f"login rejected: {_reply(code, msg)}", "Check --smtp-user and --smtp-password")

    def _bearer(self, login: BearerLogin, offered: List[str], security: Security) -> None:
        assert self.conn is not None
        if not security.encrypted and not login.allow_plain_loopback:
            raise self.fail(
                "an OAuth2 access token is never sent without TLS",
                "Choose --smtp-tls starttls or tls (the server must offer TLS)",
            )
        mechanism = sasl.choose_mechanism(login.mechanism, offered)
        if mechanism is None:
            raise self.fail(
                f"the server offers no OAuth2 login ({login.mechanism.value}; it offers AUTH {' '.join(offered)})",
                "Enable XOAUTH2 or OAUTHBEARER on the server (Microsoft 365: SMTP AUTH for the mailbox), "
                "or choose another --oauth2-mechanism",
            )
        name = self.auth_method = mechanism.value.upper()
        response = sasl.initial_response(mechanism, login.user, login.token, self.settings.host, self.settings.port)
        code, msg = self.conn.docmd("AUTH", f"{name} {_b64(response)}")
        challenge = ""
        if code == 334:  # an error challenge: answer it, then the final refusal comes
            challenge = sasl.describe_challenge(msg if isinstance(msg, bytes) else str(msg).encode())
            code, msg = self.conn.docmd(_b64(sasl.abort_response(mechanism)))
        if code != 235:
            if not 200 <= code <= 599:
                raise self.refused("AUTH", code, msg)
            detail = f" ({challenge})" if challenge else ""
            raise self.fail(
                f"the mail server refused the OAuth2 token for {login.user} ({name}): {_reply(code, msg)}{detail}",
                "Check that the app may send as this mailbox (Microsoft 365: SMTP.SendAsApp and the mailbox's "
                "SendAs permission; Google: the https://mail.google.com/ scope) and that SMTP AUTH is enabled",
                token_refused=True,
            )

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
    settings: SmtpSettings, tls: TlsSettings, login: Login, probe: ProbeMail, deadline: Deadline,
    transcript: Transcript, cleartext: Optional[List[str]] = None,
) -> SendResult:
    """Deliver `probe` to the SMTP server; return when the server accepted it (250 after DATA).

    `cleartext`, if given, collects a note when a password goes out without TLS (said on every
    outcome of the run, also when a later step fails).
    """
    session = _Session(settings, tls, deadline, transcript)
    started = now()
    try:
        security = session.open(login, cleartext)
        ready = now()
        reply = session.submit(probe)
        accepted = now()
    except (OSError, smtplib.SMTPException) as exc:
        raise session.network_failure(exc) from exc
    finally:
        session.close()
    return SendResult(
        server=settings.server,
        started_at=started,
        connected_at=session.connected_at,
        tls_started_at=session.tls_started_at,
        tls_done_at=session.tls_done_at,
        auth_started_at=session.auth_started_at,
        authenticated_at=session.authenticated_at,
        ready_at=ready,
        accepted_at=accepted,
        security=security,
        reply=reply,
        auth=session.auth_method,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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


"""One IMAP session: connect under the TLS policy, log in, select the mailbox; always log out.

`ImapSession` is a context manager: whatever happens inside the `with`, `__exit__` logs out (or
drops the connection) and detaches the transcript. Every failure becomes an ImapError that names
the phase (`self.phase`) and says what to try; `network_failure` is that one translation.

Logging in: a password goes as SASL PLAIN (UTF-8, any characters) where the server offers
AUTH=PLAIN, else as LOGIN with both arguments as quoted strings, or literals when they are not
ASCII (RFC 3501 astring); an OAuth2 token as XOAUTH2 or OAUTHBEARER, and never without TLS.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import time
from typing import Any, List, Optional, Tuple

from imapclient import IMAPClient
from imapclient import tls as imapclient_tls
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imap4 import IMAP4WithTimeout

from . import sasl
from .auth import BearerLogin, Login, PasswordAuth
from .deadline import Deadline, now
from .errors import ImapError
from .settings import ImapSettings, TlsSettings
from .sockets import Coalescer
from .tls import (
    IMAP_LEG,
    Connector,
    Security,
    TlsUnavailable,
    describe_network_error,
    peer_is_not_tls,
    secure,
)
from .transcript import MASK, Transcript

LOGIN_ATTEMPTS = 3
# What a broken connection or a server's answer can raise: IMAPClient and imaplib raise
# ValueError (int() of a UIDNEXT, a SEARCH answer) on replies that are not IMAP.
IMAP_FAILURES = (OSError, IMAPClientError, ValueError)  # when the server says it is busy ([LIMIT], [UNAVAILABLE])


class _TranscriptHandler(logging.Handler):
    """IMAPClient logs each protocol line; copy them to the transcript (not the client's lines
    while muted: the session writes its own masked line for a login)."""

    def __init__(self, transcript: Transcript):
        super().__init__(logging.DEBUG)
        self.transcript = transcript
        self.muted = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text[:2] not in ("> ", "< "):
            return  # imaplib's parser chatter
        direction, text = text[0], text[2:]
        if self.muted and direction == ">":
            return
        if text.startswith(("b'", 'b"')):
            text = text[2:-1] if text.endswith(text[1]) else text[2:]
            text = text.replace("\\r\\n", "")
        self.transcript.add("IMAP", direction, text)


class _ServerBusy(Exception):
    """LOGIN answered NO [LIMIT] or, for a password, [UNAVAILABLE] (RFC 5530): temporary, worth
    another try. (For a token, [UNAVAILABLE] means the server's identity provider is down.)"""


class _Client(IMAPClient):
    """IMAPClient whose connection tells the session about its socket and its phases."""

    def __init__(self, session: ImapSession, host: str, **kwargs: Any):
        self._session = session
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> Any:
        session = self._session
        base: Any = imapclient_tls.IMAP4_TLS if self.ssl else IMAP4WithTimeout

        class Tracked(base):
            def _create_socket(self, timeout: Optional[float] = None) -> Any:
                sock = super()._create_socket(timeout)
                session.socket_opened(sock)
                return sock

            def send(self, data: bytes) -> None:
                # one write per command line: IMAPClient writes a command in pieces (sockets.py)
                coalescer = self.__dict__.get("_coalescer")
                if coalescer is None:
                    coalescer = self._coalescer = Coalescer(super().send)
                coalescer.send(data)

            def _get_capabilities(self) -> None:
                session.phase = "CAPABILITY"
                super()._get_capabilities()

        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return Tracked(self.host, self.port, self.ssl_context, connect_timeout)
        return Tracked(self.host, self.port, connect_timeout)


class ImapSession(Connector):
    """Connected, logged in and with the mailbox selected once `open()` returns."""

    leg = IMAP_LEG

    def __init__(self, settings: ImapSettings, tls: TlsSettings, deadline: Deadline, transcript: Transcript):
        super().__init__(settings, tls, deadline, transcript)
        self.client: Optional[IMAPClient] = None
        self.security = Security()
        self.uidvalidity: Optional[int] = None
        self.uidnext: Optional[int] = None
        self.connect_started_at = 0.0
        self.logged_in_at = 0.0
        self.cleartext: List[str] = []  # "the IMAP password was sent without TLS", once sent
        self.mechanism = ""  # the SASL mechanism of an OAuth2 login
        self.auth_method = ""  # how the login went: "PLAIN", "LOGIN", or the OAuth2 mechanism
        self.login_capabilities: Tuple[str, ...] = ()  # what the server announced before the login (AUTH=...)
        self.challenge = ""  # the server's OAuth2 error challenge, in words
        self._handler = _TranscriptHandler(transcript)
        self._logger = logging.getLogger("imapclient")

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- failures -------------------------------------------------------------------------
    def fail(self, cause: str, hint: str, token_refused: bool = False) -> ImapError:
        return ImapError(cause, server=self.settings.server, hint=hint, token_refused=token_refused)

    def network_failure(self, exc: BaseException) -> ImapError:
        if self.deadline.fired or self.phase_timeout < 0.05:  # (a command the budget left no time)
            return self.fail(*self.deadline.ran_out(self.phase))
        bye = self._bye()
        if bye:
            return self.fail(
                f"the server ended the session during {self.phase}: {bye}",
                "If the mailbox was deleted or renamed meanwhile, correct --mailbox; otherwise check the server's log",
            )
        if isinstance(exc, IMAPClientError):
            text = server_text(exc)
            text = re.sub(r"^command: [A-Z ]+ => ", "", text)
            if isinstance(exc, IMAPClientAbortError) and ("EOF" in text or "closed" in text.lower()):
                return self.fail(
                    f"the server closed the connection during {self.phase}",
                    "Check the server's log; it may limit connections or have dropped this session",
                )
            if text.startswith("unexpected response"):
                return self.fail(
                    f"unexpected reply during {self.phase}, not IMAP: {text[len('unexpected response: '):][:120]!r}",
                    "Check that the port belongs to an IMAP server (and the TLS mode: implicit TLS or not)",
                )
            return self.fail(f"{self.phase} failed: {text}", "Check the server's log")
        if isinstance(exc, ValueError) and not isinstance(exc, OSError):  # (a certificate error is both)
            return self.fail(
                f"unexpected reply during {self.phase}, not understood as IMAP ({str(exc)[:120]})",
                "Check the server's log; a proxy or filter in between may mangle the answers",
            )
        cause, hint = describe_network_error(exc, self.phase_timeout)
        return self.fail(f"{cause} during {self.phase}", hint)

    def _bye(self) -> str:
        """The text of a BYE the server sent before it hung up, if any."""
        imap = getattr(self.client, "_imap", None)
        responses = getattr(imap, "untagged_responses", None) or {}
        bye = responses.get("BYE") or responses.get(b"BYE")
        if not bye:
            return ""
        last = bye[-1]
        return (last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)).strip().rstrip(".")

    def arm_timeout(self) -> None:
        """Each command gets the leg's timeout, or what is left of the budget."""
        self.phase_timeout = self.deadline.cap(self.settings.timeout)
        if self.client is not None:
            sock = self.client.socket()
            sock.settimeout(self.phase_timeout)
            self.deadline.guard(sock)  # again after STARTTLS: a new socket object

    # -- opening --------------------------------------------------------------------------
    def open(self, login: Login) -> None:
        """Connect, secure, log in and select the mailbox; note UIDVALIDITY and UIDNEXT."""
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False
        self.connect_started_at = now()
        for attempt in range(1, LOGIN_ATTEMPTS + 1):
            try:
                self.security = secure(self, self.settings.tls, self.transcript, self.fail)
                self._login(login)
                self._select()
                break
            except _ServerBusy as busy:
                pause = random.uniform(0.2, 0.6) * attempt  # noqa: S311 - spreads sensors that collided
                if attempt == LOGIN_ATTEMPTS or self.deadline.remaining() < pause + 1.0:
                    raise self.fail(
                        f"the server refuses more sessions for this login ({busy})",
                        "Too many connections for this user from this host (other sensors or clients "
                        "on the same mailbox): raise the server's per-user limit (Dovecot: "
                        "mail_max_userip_connections) or give sensors their own mailboxes",
                    ) from None
                self.transcript.note("IMAP", f"server busy ({busy}): trying again in {pause:.1f} s")
                self._drop_connection()
                time.sleep(pause)
            except IMAP_FAILURES as exc:
                raise self.network_failure(exc) from exc
        self.logged_in_at = now()

    def _drop_connection(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.shutdown()
            except OSError:
                pass

    # -- the TLS policy's connector (tls.secure) --------------------------------------------
    def connect(self, implicit: bool) -> None:
        self._drop_connection()
        self.phase = "connect (TLS handshake)" if implicit else "connect"
        self.transcript.note("IMAP", f"connecting to {self.settings.server}" + (" with TLS" if implicit else ""))
        self.phase_timeout = self.deadline.cap(self.settings.timeout)
        try:
            self.client = _Client(
                self,
                self.settings.host,
                port=self.settings.port,
                ssl=implicit,
                ssl_context=self.context,
                timeout=self.phase_timeout,
            )
        except (OSError, IMAPClientError) as exc:  # (the connect: nothing parsed yet)
            if implicit and peer_is_not_tls(exc):
                raise TlsUnavailable(str(exc)) from exc
            raise

    def offers_starttls(self) -> bool:
        assert self.client is not None
        self.phase = "STARTTLS"
        return bool(self.client.has_capability("STARTTLS"))

    def starttls(self) -> None:
        assert self.client is not None
        self.phase = "STARTTLS"
        self.arm_timeout()
        self.client.starttls(self.context)  # imaplib asks for the new capabilities itself

    def socket(self) -> Any:
        return self.client.socket() if self.client is not None else None

    # -- logging in -----------------------------------------------------------------------
    def _login(self, login: Login) -> None:
        client = self.client
        assert client is not None
        self.phase = "LOGIN"
        self.arm_timeout()
        # What the server announced before the login (its AUTH= list), as imaplib noted it at the
        # greeting or after STARTTLS: no command of its own (capabilities() would send one).
        self.login_capabilities = tuple(str(c) for c in getattr(client._imap, "capabilities", ()))
        try:
            if isinstance(login, BearerLogin):
                self._bearer(client, login)
            else:
                assert isinstance(login, PasswordAuth)
                self._password(client, login)
        except LoginError as exc:
            text = server_text(exc)
            if "[LIMIT]" in text or ("[UNAVAILABLE]" in text and isinstance(login, PasswordAuth)):
                raise _ServerBusy(text) from None
            raise self._refusal(client, login, text) from None
        finally:
            self._handler.muted = False
        client.capabilities()  # caches the post-login list most servers send with the OK

    def _password(self, client: IMAPClient, login: PasswordAuth) -> None:
        if not self.security.encrypted:
            self.transcript.note("IMAP", "WARNING: sending the password without TLS")
            if not self.cleartext:  # once, however often a busy server made the login repeat
                self.cleartext.append("the IMAP password was sent without TLS")
        self._handler.muted = True
        if client.has_capability("AUTH=PLAIN"):
            self.transcript.add("IMAP", ">", f"AUTHENTICATE PLAIN {MASK}")
            self.auth_method = "PLAIN"
            if client.has_capability("SASL-IR"):  # RFC 4959: the response goes with the command
                response = base64.b64encode(sasl.plain(login.user, login.password))
                self._one_line_login(client, b"AUTHENTICATE", [b"PLAIN", response])
            else:
                client.plain_login(login.user, login.password)
            return
        if client.has_capability("LOGINDISABLED"):
            raise self.fail(
                "the server refuses to log in without TLS (LOGINDISABLED)",
                "Choose a TLS mode for IMAP (--imap-tls starttls or tls)",
            )
        self.transcript.add("IMAP", ">", f"LOGIN {MASK}")
        self.auth_method = "LOGIN"
        self._one_line_login(client, b"LOGIN", [astring(login.user), astring(login.password)])

    @staticmethod
    def _one_line_login(client: IMAPClient, command: bytes, args: List[bytes]) -> None:
        """A login that is one command and its tagged answer (one round trip)."""
        try:
            typ, data = client._raw_command(command, args, uid=False)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            raise LoginError(str(exc)) from None
        if typ != "OK":
            raise LoginError(_joined(data))
        client._imap.state = "AUTH"  # what imaplib's own login() sets on OK

    def _bearer(self, client: IMAPClient, login: BearerLogin) -> None:
        if not self.security.encrypted and not login.allow_plain_loopback:
            raise self.fail(
                "an OAuth2 access token is never sent without TLS",
                "Choose --imap-tls starttls or tls (the server must offer TLS)",
            )
        offered = [c.decode("ascii", "replace")[5:] for c in client.capabilities() if c.upper().startswith(b"AUTH=")]
        mechanism = sasl.choose_mechanism(login.mechanism, offered)
        if mechanism is None:
            raise self.fail(
                f"the server offers no OAuth2 login ({login.mechanism.value}; it offers AUTH={' AUTH='.join(offered)})",
                "Enable XOAUTH2 or OAUTHBEARER on the server (Microsoft 365: IMAP for the mailbox), "
                "or choose another --oauth2-mechanism",
            )
        first = sasl.initial_response(mechanism, login.user, login.token, self.settings.host, self.settings.port)

        def respond(challenge: bytes) -> bytes:
            if not challenge:
                return first
            self.challenge = sasl.describe_challenge(challenge)  # an error: answer, the NO follows
            return sasl.abort_response(mechanism)

        self._handler.muted = True
        self.transcript.add("IMAP", ">", f"AUTHENTICATE {mechanism.value.upper()} {MASK}")
        self.mechanism = self.auth_method = mechanism.value.upper()
        client.sasl_login(mechanism.value.upper(), respond)

    def _refusal(self, client: IMAPClient, login: Login, text: str) -> ImapError:
        self.transcript.add("IMAP", "<", f"login refused: {text}")
        if isinstance(login, BearerLogin):
            challenge = f"; the server said {self.challenge}" if self.challenge else ""
            if "[UNAVAILABLE]" in text:
                return self.fail(
                    f"the server could not check the OAuth2 token ({text}{challenge})",
                    "The mail server's identity provider is unreachable or failing: a server-side "
                    "problem; check the server's log and the provider's status",
                )
            return self.fail(
                f"the mail server refused the OAuth2 token for {login.user} ({self.mechanism}: {text}{challenge})",
                "Check that the app may open this mailbox (Microsoft 365: IMAP.AccessAsApp and "
                "Add-MailboxPermission for the app's service principal; Google: domain-wide delegation with "
                "the https://mail.google.com/ scope)",
                token_refused=True,
            )
        if "[UNAVAILABLE]" in text:
            return self.fail(
                f"the server cannot log anyone in right now ({text})",
                "A server-side problem (its authentication back end is unavailable): check the server's log",
            )
        return self.fail(f"login rejected ({text})", "Check --imap-user and --imap-password")

    def _select(self) -> None:
        client = self.client
        assert client is not None
        self.phase = f"SELECT {self.settings.mailbox}"
        self.arm_timeout()
        try:
            status = client.select_folder(self.settings.mailbox)
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):  # the connection broke: not the mailbox
                raise
            raise self.fail(
                f"mailbox {self.settings.mailbox!r} cannot be opened ({server_text(exc)})",
                "Check --mailbox: the folder must exist; names other than INBOX are case-sensitive",
            ) from None
        self.uidvalidity = _int(status.get(b"UIDVALIDITY"))
        self.uidnext = _int(status.get(b"UIDNEXT"))

    # -- closing --------------------------------------------------------------------------
    def close(self) -> None:
        client, self.client = self.client, None
        try:
            if client is not None:
                try:
                    client.socket().settimeout(self.deadline.cap(2.0))
                    client.logout()
                except Exception:  # noqa: BLE001 - the connection may be gone; nothing to save
                    try:
                        client.shutdown()
                    except OSError:
                        pass
        finally:
            self._logger.removeHandler(self._handler)


def astring(text: str) -> bytes:
    """An IMAP astring for LOGIN: a quoted string, or (not ASCII) raw bytes that IMAPClient's
    `_raw_command` sends as a literal. Line breaks and NUL never get here (settings refuse them)."""
    raw = text.encode("utf-8")
    if any(b > 0x7E or b < 0x20 for b in raw):
        return raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _joined(data: object) -> str:
    parts = data if isinstance(data, (list, tuple)) else [data]
    return " ".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts if p)


def _int(value: object) -> Optional[int]:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def server_text(exc: BaseException) -> str:
    """The server's own words from an IMAPClient error, without the library's wrapping."""
    text = str(exc)
    for prefix in ("b'", 'b"'):
        text = text.replace(prefix, "")
    text = re.sub(r"^(select|login|search|fetch|store|expunge|idle|authenticate) failed: ", "", text.strip("'\" "))
    text = re.sub(r"\s*\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)", "", text)  # Dovecot's timing note
    text = re.sub(r"'?\s*This error may have been caused by .*$", "", text, flags=re.S)  # IMAPClient's advice
    text = "".join(ch for ch in text if ch.isprintable())
    return text.rstrip(". ") or f"{type(exc).__name__}, without readable text"

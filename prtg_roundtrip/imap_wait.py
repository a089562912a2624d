"""Step 2: watch the IMAP mailbox until the probe arrives, then delete exactly that message.

The watch is armed before the probe is sent: connect, log in, select, and note UIDVALIDITY and
UIDNEXT. Only messages whose UID is at least that UIDNEXT can be the probe, so every check costs
the same however full the mailbox is. A check asks the server (UID SEARCH ... SUBJECT) or reads
the new messages' headers itself (BODY.PEEK, which sets no flag); either way a candidate is the
probe only if its Message-ID is the probe's.

Waiting: check at once, then after gaps that grow by GROWTH from FIRST_GAP up to --interval,
so a delivery of a few milliseconds is seen within a few milliseconds and a late one at most
about 20% late. A check is a NOOP, which makes the server announce new mail (EXISTS); only then,
and in any case once per --interval, comes the search. From IDLE_TAKEOVER on, the waits between
checks are spent in IDLE where the server offers it (WaitMethod.AUTO), so a push ends a wait
early; the schedule goes on regardless, since some servers never push (Outlook, Office 365) and
Dovecot 2.3 pushes only 500 ms after delivery. WaitMethod.POLL never uses IDLE.

Commands one run sends: `command_bound()` computes the worst case from the schedule (every check
NOOP + SEARCH + FETCH, IDLE + DONE around every late wait): 174 for the defaults
(--max-trip-time 30, --interval 5; 45 checks, 15 of them in the first 100 ms), 154 for
--max-trip-time 10 --interval 1. A run whose probe arrives in a few milliseconds sends about 15:
LOGIN, SELECT, 3-4 NOOPs, 2 SEARCHes, a FETCH, STORE, UID EXPUNGE, LOGOUT.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, List, Optional, Tuple

from imapclient import IMAPClient
from imapclient import tls as imapclient_tls
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imap4 import IMAP4WithTimeout

from .deadline import Deadline, now
from .errors import DeliveryTimeout, ImapError
from .probe import MARKER_HEADER, SUBJECT_MARK, ProbeMail, parse_marker, probe_message_id
from .settings import ImapSettings, SearchMethod, TlsMode, TlsSettings, WaitMethod
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

FIRST_GAP = 0.002  # seconds after the first check
GROWTH = 1.2  # each gap this much longer than the one before: the probe is seen at most ~20% late
IDLE_TAKEOVER = 0.5  # from this gap on, wait in IDLE (a push ends the wait early)

_HEADERS = f"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT {MARKER_HEADER.upper()})]"
_DELETED = b"\\Deleted"
LOGIN_ATTEMPTS = 3  # when the server says it is busy ([LIMIT], [UNAVAILABLE])
FOREIGN_PROBE_AGE = 86400.0  # another sensor's probe is left alone until it is a day old


@dataclass(frozen=True)
class Sweep:
    """Leftover probes of earlier runs found after this run's probe was deleted."""

    removed_own: int = 0  # this sensor's, older than their run's budget
    removed_foreign: int = 0  # other sensors', older than a day
    kept_own: int = 0  # this sensor's, still within their run's budget (in flight)
    kept_foreign: int = 0  # other sensors', younger than a day


@dataclass(frozen=True)
class ReceiveResult:
    """What step 2 observed. Times are `deadline.now()` seconds."""

    server: str
    mailbox: str
    connect_started_at: float
    logged_in_at: float  # TLS and login done, mailbox selected: armed
    found_at: float  # the check that saw the probe returned
    uid: int
    security: str
    detection: str  # "IDLE push" or "polling": what ended the wait in which the probe was seen
    checks: int
    deleted: bool  # expunged (True) or, without UIDPLUS, only flagged \Deleted (False)
    certificate_days: Optional[float] = None
    fallback: Optional[str] = None


class _TranscriptHandler(logging.Handler):
    """IMAPClient logs each protocol line (LOGIN already masked); copy them to the transcript."""

    def __init__(self, transcript: Transcript):
        super().__init__(logging.DEBUG)
        self.transcript = transcript

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text[:2] not in ("> ", "< "):
            return  # imaplib's parser chatter
        direction, text = text[0], text[2:]
        if text.startswith(("b'", 'b"')):
            text = text[2:-1] if text.endswith(text[1]) else text[2:]
            text = text.replace("\\r\\n", "")
        self.transcript.add("IMAP", direction, text)


class _ServerBusy(Exception):
    """LOGIN answered NO [LIMIT] or [UNAVAILABLE] (RFC 5530): temporary, worth another try."""


class _Client(IMAPClient):
    """IMAPClient whose connection tells the watch about its socket and its phases."""

    def __init__(self, watch: MailboxWatch, host: str, **kwargs: Any):
        self._watch = watch
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> Any:
        watch = self._watch
        base: Any = imapclient_tls.IMAP4_TLS if self.ssl else IMAP4WithTimeout

        class Tracked(base):
            def _create_socket(self, timeout: Optional[float] = None) -> Any:
                sock = super()._create_socket(timeout)
                watch.socket_opened(sock)
                return sock

            def _get_capabilities(self) -> None:
                watch.phase = "CAPABILITY"
                super()._get_capabilities()

        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return Tracked(self.host, self.port, self.ssl_context, connect_timeout)
        return Tracked(self.host, self.port, connect_timeout)


class MailboxWatch:
    """One IMAP session: open (arm), wait_for, delete, close."""

    def __init__(self, settings: ImapSettings, tls: TlsSettings, deadline: Deadline, transcript: Transcript):
        self.settings = settings
        self.deadline = deadline
        self.transcript = transcript
        self.context = make_context(tls) if settings.tls is not TlsMode.OFF else None
        self.client: Optional[IMAPClient] = None
        self.phase = "connect"
        self.phase_timeout = deadline.cap(settings.timeout)
        self.uidnext: Optional[int] = None
        self.uidvalidity: Optional[int] = None
        self.security = "plain text"
        self.fallback: Optional[str] = None
        self.connect_started_at = 0.0
        self.logged_in_at = 0.0
        self.certificate_days: Optional[float] = None
        self._handler = _TranscriptHandler(transcript)
        self._logger = logging.getLogger("imapclient")

    # -- failures -------------------------------------------------------------------------
    def fail(self, cause: str, hint: str) -> ImapError:
        return ImapError(cause, server=self.settings.server, hint=hint)

    def network_failure(self, exc: BaseException) -> ImapError:
        if self.deadline.fired:
            return self.fail(*self.deadline.ran_out(self.phase))
        bye = self._bye()
        if bye:
            return self.fail(
                f"the server ended the session during {self.phase}: {bye}",
                "If the mailbox was deleted or renamed meanwhile, correct --mailbox; otherwise check the server's log",
            )
        if isinstance(exc, IMAPClientError):
            text = _server_text(exc)
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

    def socket_opened(self, sock: Any) -> None:
        tune(sock)
        self.deadline.guard(sock)
        self.phase = "greeting"

    def _arm_timeout(self) -> None:
        self.phase_timeout = self.deadline.cap(self.settings.timeout)
        if self.client is not None:
            sock = self.client.socket()
            sock.settimeout(self.phase_timeout)
            self.deadline.guard(sock)  # again after STARTTLS: a new socket object

    # -- opening --------------------------------------------------------------------------
    def open(self) -> None:
        """Connect, secure, log in and select the mailbox; note UIDVALIDITY and UIDNEXT."""
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False
        self.connect_started_at = now()
        for attempt in range(1, LOGIN_ATTEMPTS + 1):
            try:
                self._connect_with_policy()
                self._login()
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
            except (OSError, IMAPClientError) as exc:
                raise self.network_failure(exc) from exc
        self.logged_in_at = now()

    def _drop_connection(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.shutdown()
            except OSError:
                pass

    def _connect(self, implicit: bool) -> None:
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
                timeout=self.deadline.cap(self.settings.timeout),
            )
        except (OSError, IMAPClientError) as exc:
            if implicit and peer_is_not_tls(exc):
                raise TlsUnavailable(str(exc)) from exc
            raise

    def _connect_with_policy(self) -> None:
        mode = self.settings.tls
        try:
            self._connect(implicit=mode.implicit)
        except TlsUnavailable as exc:
            if mode.required:
                raise self.fail(
                    f"TLS not offered on this port ({exc})",
                    "The port speaks plain text: use --imap-tls starttls, or the IMAPS port (993)",
                ) from None
            self.fallback = "the port does not speak implicit TLS"
            self.transcript.note("IMAP", f"{self.fallback}: reconnecting without implicit TLS")
            self._connect(implicit=False)
        client = self.client
        assert client is not None
        if not client.ssl and mode is not TlsMode.OFF:
            self.phase = "STARTTLS"
            if client.has_capability("STARTTLS"):
                self._arm_timeout()
                client.starttls(self.context)  # imaplib asks for the new capabilities itself
            elif mode is TlsMode.STARTTLS:
                raise self.fail(
                    "TLS not offered: the server does not announce STARTTLS",
                    "Enable STARTTLS on the server, or choose --imap-tls starttls-if-available",
                )
            else:
                self.fallback = self.fallback or "the server does not announce STARTTLS"
                self.transcript.note("IMAP", f"{self.fallback}: continuing without TLS")
        sock = client.socket()
        self.security = session_description(sock)
        if self.security != "plain text":
            self.security += " (implicit TLS)" if client.ssl else " (STARTTLS)"
            self.certificate_days = certificate_days_left(sock)

    def _login(self) -> None:
        client = self.client
        assert client is not None
        self.phase = "LOGIN"
        self._arm_timeout()
        if self.security == "plain text":
            self.transcript.note("IMAP", "WARNING: sending the password without TLS")
        try:
            client.login(self.settings.user, self.settings.password)
        except LoginError as exc:
            text = _server_text(exc)
            if "[LIMIT]" in text or "[UNAVAILABLE]" in text:
                raise _ServerBusy(text) from None
            if client.has_capability("LOGINDISABLED"):
                raise self.fail(
                    "the server refuses to log in without TLS (LOGINDISABLED)",
                    "Choose a TLS mode for IMAP (--imap-tls starttls or tls)",
                ) from None
            raise self.fail(f"login rejected ({_server_text(exc)})", "Check --imap-user and --imap-password") from None
        client.capabilities()  # caches the post-login list most servers send with the OK

    def _select(self) -> None:
        client = self.client
        assert client is not None
        self.phase = f"SELECT {self.settings.mailbox}"
        self._arm_timeout()
        try:
            status = client.select_folder(self.settings.mailbox)
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):  # the connection broke: not the mailbox
                raise
            raise self.fail(
                f"mailbox {self.settings.mailbox!r} cannot be opened ({_server_text(exc)})",
                "Check --mailbox: the folder must exist; names other than INBOX are case-sensitive",
            ) from None
        self.uidvalidity = _int(status.get(b"UIDVALIDITY"))
        self.uidnext = _int(status.get(b"UIDNEXT"))
        self._exists_seen_elsewhere()  # SELECT's own EXISTS is the baseline, not news

    # -- waiting --------------------------------------------------------------------------
    def wait_for(self, probe: ProbeMail, accepted_at: float) -> Tuple[int, float, str, int]:
        """Wait until the probe is in the mailbox: (uid, found_at, detection, checks)."""
        client = self.client
        assert client is not None
        end = min(accepted_at + self.settings.max_trip_time, self.deadline.end)
        use_idle = self.settings.wait is WaitMethod.AUTO and client.has_capability("IDLE")
        gap, checks, pushed, last_full = FIRST_GAP, 0, False, float("-inf")
        try:
            while True:
                self.phase = "the mailbox check"
                # Search when the server announced new mail, and in any case once per --interval
                # (the first check included) and at the very end, for servers that announce nothing.
                full = now() - last_full >= self.settings.interval or now() >= end
                uid, seen_at, searched = self._check(probe, force=full or pushed)
                checks += 1
                if searched and full:
                    last_full = seen_at
                if uid is not None:
                    self.transcript.progress(None)
                    return uid, seen_at, "IDLE push" if pushed else "polling", checks
                left = end - now()
                if left <= 0:
                    self.transcript.progress(None)
                    raise self._not_arrived(accepted_at, checks)
                if gap >= IDLE_TAKEOVER:
                    self.transcript.progress(
                        f"waiting for the probe in {self.settings.mailbox!r}: {seen_at - accepted_at:.1f} s of "
                        f"{end - accepted_at:.0f} s ({'IDLE' if use_idle else 'polling'}, {checks} checks)"
                    )
                if use_idle and gap >= IDLE_TAKEOVER:
                    pushed, use_idle = self._idle(min(gap, left))
                else:
                    pushed = False
                    time.sleep(min(gap, left))
                gap = min(gap * GROWTH, self.settings.interval)
        except (OSError, IMAPClientError) as exc:
            raise self.network_failure(exc) from exc

    def _not_arrived(self, accepted_at: float, checks: int) -> DeliveryTimeout:
        waited = now() - accepted_at
        capped = self.deadline.end < accepted_at + self.settings.max_trip_time
        limit = "the run's --timeout budget" if capped else f"--max-trip-time {self.settings.max_trip_time:g} s"
        return DeliveryTimeout(
            f"the probe mail accepted by SMTP did not arrive in {self.settings.mailbox!r} within "
            f"{waited:.1f} s ({limit}; {checks} checks). It stays in the mailbox if it arrives later",
            server=self.settings.server,
            hint="Check the mail server's queue and log for the probe's Message-ID, and the "
            "mailbox's filters; raise --max-trip-time if delivery is just slow",
        )

    def _idle(self, seconds: float) -> Tuple[bool, bool]:
        """Wait in IDLE for a push or `seconds`: (new mail announced, IDLE still usable)."""
        client = self.client
        assert client is not None
        self.phase = "IDLE"
        self._arm_timeout()
        try:
            client.idle()
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):
                raise
            self.transcript.note("IMAP", f"IDLE refused ({_server_text(exc)}): polling instead")
            time.sleep(seconds)
            return False, False
        try:
            responses = client.idle_check(timeout=seconds)
        finally:
            self._arm_timeout()
            _, more = client.idle_done()
        return _announces_new_mail(list(responses) + list(more)), True

    def _check(self, probe: ProbeMail, force: bool) -> Tuple[Optional[int], float, bool]:
        """One look at the mailbox: (uid of the probe or None, when the answer came, searched?).

        A NOOP first: it makes the server report what arrived (EXISTS). Only then, or when
        `force`d, a search among the new UIDs.
        """
        client = self.client
        assert client is not None
        self._arm_timeout()
        _, responses = client.noop()
        self._notice_uidvalidity(responses)
        announced = self._exists_seen_elsewhere() | _announces_new_mail(responses)  # drain both, always
        if not (force or announced):
            return None, now(), False
        first = self.uidnext or 1
        criteria: List[object] = ["UID", f"{first}:*"]
        if self.settings.search is SearchMethod.SERVER:
            criteria += ["SUBJECT", probe.subject_token]
        # "n:*" also matches the highest UID when it is below n: keep only UIDs >= n.
        candidates = [u for u in client.search(criteria) if u >= first]
        seen_at = now()
        if not candidates:
            return None, seen_at, True
        # Server search: the FETCH only confirms the hit, which SEARCH already timed. Local
        # search: the FETCH is the match itself (right even where the server's SEARCH lags).
        headers = self._headers(candidates)
        if self.settings.search is SearchMethod.LOCAL:
            seen_at = now()
        for uid, message_id in headers:
            if message_id == probe.message_id:
                return uid, seen_at, True
        return None, seen_at, True

    def _exists_seen_elsewhere(self) -> bool:
        """An EXISTS that came with another command's answer (imaplib keeps it aside)."""
        imap = getattr(self.client, "_imap", None)
        if imap is None:
            return False
        _, data = imap.response("EXISTS")  # pops it
        return data not in ([None], None, [])

    def _notice_uidvalidity(self, responses: object) -> None:
        """A new UIDVALIDITY (mailbox recreated) voids UIDNEXT: look at the whole mailbox."""
        match = re.search(rb"\[UIDVALIDITY (\d+)\]", repr(responses).encode())
        if match and self.uidnext is not None and int(match.group(1)) != self.uidvalidity:
            self.transcript.note("IMAP", "UIDVALIDITY changed: checking the whole mailbox from now on")
            self.uidvalidity, self.uidnext = int(match.group(1)), None

    def _headers(self, messages: List[int]) -> List[Tuple[int, str]]:
        """(uid, Message-ID) of the given messages, read with BODY.PEEK (no \\Seen)."""
        return [(uid, str(h.get("Message-ID", "")).strip()) for uid, h in self._header_fields(messages)]

    def _header_fields(self, messages: List[int]) -> List[Tuple[int, Message]]:
        client = self.client
        assert client is not None
        fetched = client.fetch(messages, [_HEADERS])
        parser = BytesHeaderParser(policy=default_policy)
        result: List[Tuple[int, Message]] = []
        for uid, data in fetched.items():
            raw = next((v for k, v in data.items() if bytes(k).startswith(b"BODY[")), b"")
            result.append((int(uid), parser.parsebytes(bytes(raw or b""))))
        return result

    # -- leftovers ------------------------------------------------------------------------
    def sweep(self, sensor: str, wall_now: float) -> Sweep:
        """Remove probes that runs killed or timed out left behind.

        A message is a probe only if its marker header parses and agrees with its subject and
        Message-ID; anything else is never touched, whatever its subject says. This sensor's
        probe is stale once its run's budget has passed (PRTG never runs one sensor twice at a
        time, so it can no longer be waited for); another sensor's only after a day.
        """
        client = self.client
        assert client is not None
        self.phase = "removing leftover probes"
        self._arm_timeout()
        try:
            candidates = list(client.search(["HEADER", MARKER_HEADER, "guid="]))
            if not candidates:
                return Sweep()
            stale, kept_own, kept_foreign, own, foreign = [], 0, 0, 0, 0
            for uid, headers in self._header_fields(candidates):
                marker = parse_marker(str(headers.get(MARKER_HEADER, "")))
                if marker is None:
                    continue
                subject = str(headers.get("Subject", ""))
                message_id = str(headers.get("Message-ID", "")).strip()
                domain = message_id.rpartition("@")[2].rstrip(">")
                if f"{SUBJECT_MARK} {{{marker.guid}}}" not in subject or message_id != probe_message_id(
                    marker.guid, domain
                ):
                    continue
                age = wall_now - marker.sent
                if marker.sensor == sensor and age > marker.budget:
                    stale.append(uid)
                    own += 1
                elif marker.sensor != sensor and age > FOREIGN_PROBE_AGE:
                    stale.append(uid)
                    foreign += 1
                elif marker.sensor == sensor:
                    kept_own += 1
                else:
                    kept_foreign += 1
            if stale and not self._expunge(stale):
                return Sweep(kept_own=kept_own + own, kept_foreign=kept_foreign + foreign)
            if stale:
                self.transcript.note("IMAP", f"removed {len(stale)} leftover probe(s): UIDs {stale}")
            return Sweep(own, foreign, kept_own, kept_foreign)
        except (OSError, IMAPClientError) as exc:
            raise self.network_failure(exc) from exc

    # -- deleting and closing -------------------------------------------------------------
    def delete(self, uid: int) -> bool:
        """Remove the probe: True if expunged, False if only flagged (no UIDPLUS, see below)."""
        self.phase = "deleting the probe"
        self._arm_timeout()
        try:
            return self._expunge([uid])
        except (OSError, IMAPClientError) as exc:
            raise self.network_failure(exc) from exc

    def _expunge(self, uids: List[int]) -> bool:
        """Flag `uids` \\Deleted and expunge exactly them; False if they could only be flagged."""
        client = self.client
        assert client is not None
        client.add_flags(uids, [_DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
            return True
        # A plain EXPUNGE would also remove what other clients flagged \Deleted: only expunge
        # when no other message is flagged so.
        if [u for u in client.search(["DELETED"]) if u not in uids]:
            self.transcript.note("IMAP", "no UIDPLUS and other messages are flagged \\Deleted: not expunging")
            return False
        client.expunge()
        return True

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

    def result(self, uid: int, found_at: float, detection: str, checks: int, deleted: bool) -> ReceiveResult:
        return ReceiveResult(
            server=self.settings.server,
            mailbox=self.settings.mailbox,
            connect_started_at=self.connect_started_at,
            logged_in_at=self.logged_in_at,
            found_at=found_at,
            uid=uid,
            security=self.security,
            detection=detection,
            checks=checks,
            deleted=deleted,
            certificate_days=self.certificate_days,
            fallback=self.fallback,
        )


def _announces_new_mail(responses: object) -> bool:
    """EXISTS or RECENT among parsed untagged responses such as [(3, b'EXISTS')]."""
    return any(
        isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT")
        for r in (responses if isinstance(responses, (list, tuple)) else ())
    )


def command_bound(max_trip_time: float, interval: float) -> int:
    """The most IMAP commands one run sends, from the wait schedule (see the module docstring).

    Worst case: every check finds new mail that is not the probe (NOOP + SEARCH + FETCH), and
    IDLE + DONE around every wait from IDLE_TAKEOVER on.
    """
    elapsed, gap, checks, idles = 0.0, FIRST_GAP, 0, 0
    while True:
        checks += 1
        if elapsed >= max_trip_time:
            break
        idles += gap >= IDLE_TAKEOVER
        elapsed += gap
        gap = min(gap * GROWTH, interval)
    opening = 5  # CAPABILITY, STARTTLS, CAPABILITY, LOGIN, SELECT
    closing = 3 + 4 + 1  # delete (STORE, SEARCH DELETED, EXPUNGE), sweep (4), LOGOUT
    return opening + 3 * checks + 2 * idles + closing


def _int(value: object) -> Optional[int]:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _server_text(exc: BaseException) -> str:
    """The server's own words from an IMAPClient error, without the library's wrapping."""
    text = str(exc)
    for prefix in ("b'", 'b"'):
        text = text.replace(prefix, "")
    text = re.sub(r"^(select|login|search|fetch|store|expunge|idle) failed: ", "", text.strip("'\" "))
    text = re.sub(r"\s*\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)", "", text)  # Dovecot's timing note
    return text.rstrip(". ") or type(exc).__name__


"""Step 2: wait until the probe is in the mailbox, following the wait schedule.

The session (imap_session) was opened and the mailbox (imap_mailbox) armed before the send. Each
check is a NOOP, which makes the server announce new mail (EXISTS); only then, and in any case
once per --interval and at the very end, comes the search (for servers that announce nothing).
From the schedule's IDLE gaps on, waits are spent in IDLE where the server offers it
(WaitMethod.AUTO), so a push ends a wait early; the schedule goes on regardless, since some
servers never push (Outlook, Office 365) and Dovecot 2.3 pushes only 500 ms after delivery.
WaitMethod.POLL never uses IDLE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from .deadline import now
from .errors import DeliveryTimeout
from .imap_junk import JunkWatch
from .imap_mailbox import Mailbox, announces_new_mail
from .imap_session import IMAP_FAILURES, ImapSession, server_text
from .probe import ProbeMail
from .settings import WaitMethod
from .tls import Security
from .verdicts import NO_VERDICTS, Verdicts
from .wait_schedule import WaitSchedule

INBOX, JUNK = "inbox", "junk"  # where the probe landed (Landed channel: measurement.LANDED)


@dataclass(frozen=True)
class Found:
    """Where and when the wait ended."""

    uid: int
    found_at: float  # the check that saw the probe returned
    detection: str  # "IDLE push" or "polling": what ended the wait in which the probe was seen
    checks: int
    landed: str = INBOX  # or JUNK: found in the Junk folder (JunkWatch), which is selected now
    headers: bytes = b""  # the probe's header fields as fetched (the verdicts are read from them)


@dataclass(frozen=True)
class ReceiveResult:
    """What step 2 observed. Times are `deadline.now()` seconds."""

    server: str
    mailbox: str
    connect_started_at: float
    logged_in_at: float  # TLS and login done, mailbox selected: armed
    found_at: float
    uid: int
    security: Security
    detection: str
    checks: int
    deletion: str  # "expunged"; "flagged" (no UIDPLUS, others flagged: only \Deleted set); "failed"
    auth: str = ""  # how the sensor logged in: "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"
    landed: str = INBOX  # INBOX or JUNK
    verdicts: Verdicts = NO_VERDICTS  # the receiving server's, from the probe's header fields
    junk_folder: Optional[str] = None  # the Junk folder watched, if any


def receive_result(session: ImapSession, found: Found, deletion: str, verdicts: Verdicts = NO_VERDICTS,
                   junk_folder: Optional[str] = None) -> ReceiveResult:
    return ReceiveResult(
        server=session.settings.server,
        mailbox=session.settings.mailbox,
        connect_started_at=session.connect_started_at,
        logged_in_at=session.logged_in_at,
        found_at=found.found_at,
        uid=found.uid,
        security=session.security,
        detection=found.detection,
        checks=found.checks,
        deletion=deletion,
        auth=session.auth_method,
        landed=found.landed,
        verdicts=verdicts,
        junk_folder=junk_folder,
    )


def wait_for(session: ImapSession, mailbox: Mailbox, probe: ProbeMail, accepted_at: float,
             junk: Optional[JunkWatch] = None) -> Found:
    """Wait until the probe is in the mailbox, or in the Junk folder that `junk` watches
    (DeliveryTimeout when it comes to neither in time)."""
    settings = session.settings
    client = session.client
    assert client is not None
    end = min(accepted_at + settings.max_trip_time, session.deadline.end)
    use_idle = settings.wait is WaitMethod.AUTO and client.has_capability("IDLE")
    checks, pushed, last_full = 0, False, float("-inf")
    gaps = WaitSchedule(settings.max_trip_time, settings.interval).gaps()
    try:
        while True:
            session.phase = "the mailbox check"
            # Search when the server announced new mail, and in any case once per --interval
            # (the first check included) and at the very end, for servers that announce nothing.
            full = now() - last_full >= settings.interval or now() >= end
            check = mailbox.check(probe, force=full or pushed)
            checks += 1
            if check.searched and full:
                last_full = check.answered_at
            if check.uid is not None:
                session.transcript.progress(None)
                return Found(check.uid, check.answered_at, "IDLE push" if pushed else "polling", checks, INBOX,
                             check.headers)
            # The Junk folder: after the searches once per --interval (and at the end), never after
            # the first check, so a probe in the mailbox within the first --interval costs nothing.
            if junk is not None and check.searched and full and checks > 1:
                hit = junk.look(probe)
                if hit is not None and hit.uid is not None:
                    session.transcript.progress(None)
                    return Found(hit.uid, hit.answered_at, "polling", checks, JUNK, hit.headers)
            left = end - now()
            if left <= 0:
                session.transcript.progress(None)
                raise not_arrived(session, accepted_at, checks, junk.name if junk is not None else None)
            gap = next(gaps)
            if gap.idle:
                session.transcript.progress(
                    f"waiting for the probe in {settings.mailbox!r}: {check.answered_at - accepted_at:.1f} s of "
                    f"{end - accepted_at:.0f} s ({'IDLE' if use_idle else 'polling'}, {checks} checks)"
                )
            if use_idle and gap.idle:
                pushed, use_idle = _idle(session, min(gap.seconds, left))
            else:
                pushed = False
                time.sleep(min(gap.seconds, left))
    except IMAP_FAILURES as exc:
        raise session.network_failure(exc) from exc


def not_arrived(session: ImapSession, accepted_at: float, checks: int,
                junk_folder: Optional[str] = None) -> DeliveryTimeout:
    settings = session.settings
    waited = now() - accepted_at
    capped = session.deadline.end < accepted_at + settings.max_trip_time
    limit = "the run's --timeout budget" if capped else f"--max-trip-time {settings.max_trip_time:g} s"
    return DeliveryTimeout(
        f"the probe mail accepted by SMTP did not arrive in {settings.mailbox!r}"
        f"{f' nor in the Junk folder {junk_folder!r}' if junk_folder else ''} within "
        f"{waited:.1f} s ({limit}; {checks} checks). It stays in the mailbox if it arrives later",
        server=settings.server,
        hint="Check the mail server's queue and log for the probe's Message-ID, and the "
        "mailbox's filters; raise --max-trip-time if delivery is just slow",
    )


def _idle(session: ImapSession, seconds: float) -> Tuple[bool, bool]:
    """Wait in IDLE for a push or `seconds`: (new mail announced, IDLE still usable)."""
    client = session.client
    assert client is not None
    session.phase = "IDLE"
    session.arm_timeout()
    try:
        client.idle()
    except IMAPClientError as exc:
        if isinstance(exc, IMAPClientAbortError):
            raise
        session.transcript.note("IMAP", f"IDLE refused ({server_text(exc)}): polling instead")
        time.sleep(seconds)
        return False, False
    more: Optional[list] = None
    try:
        try:
            responses = client.idle_check(timeout=seconds)
        finally:
            session.arm_timeout()
            _, more = client.idle_done()
    except (AttributeError, TypeError) as exc:  # IMAPClient on answers it does not expect (a '+' after DONE)
        raise IMAPClientError(f"unexpected answer to IDLE/DONE ({type(exc).__name__})") from exc
    return announces_new_mail(list(responses) + list(more or [])), True

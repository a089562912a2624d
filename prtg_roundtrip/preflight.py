"""`prtg-roundtrip check ARGS...`: everything a round trip needs, except the mail.

Connects to both servers with the run's parameters, negotiates TLS, logs in on both legs and
selects the mailbox, then reports the capabilities that matter to the sensor (IMAP: IDLE,
UIDPLUS, SPECIAL-USE, the AUTH mechanisms; SMTP: the AUTH mechanisms) and the certificates.
Nothing is sent. The legs' own sessions do the work (imap_session.ImapSession,
smtp_send._Session), so a check fails exactly where a run would, with the same words; the
result is a Report like a run's, so every format works (a PRTG sensor of its own, a Nagios
check, a console).
"""

from __future__ import annotations

import smtplib
from typing import List, Mapping, Optional, Tuple

from .auth import Login
from .deadline import Deadline, note_step, now
from .imap_session import ImapSession
from .measurement import CHANNEL_IDS, _fallback_note, leg_detail, limit_state
from .report import Channel, LegDetail, Report
from .roundtrip import Tokens, _with_fresh_token, run_deadline
from .settings import Settings
from .smtp_send import _Session
from .tls import Security
from .transcript import Transcript

IMAP_FEATURES = ("IDLE", "UIDPLUS", "SPECIAL-USE")


def run_preflight(settings: Settings, transcript: Transcript, environ: Mapping[str, str],
                  deadline: Optional[Deadline] = None) -> Report:
    deadline = deadline or run_deadline(settings)
    cleartext: List[str] = []
    try:
        started = now()
        tokens = Tokens(deadline, environ, transcript, settings.tls)
        imap_login = tokens.login(settings.imap.auth)
        smtp_login = tokens.login(settings.smtp.auth)
        note_step("the preflight (IMAP)")
        with ImapSession(settings.imap, settings.tls, deadline, transcript) as session:
            try:
                _with_fresh_token(session.open, imap_login, settings.imap.auth, tokens)
            finally:
                cleartext.extend(session.cleartext)
            imap = _imap_leg(session)
            imap_security = session.security
            imap_ms = _ms(session.connect_started_at, session.logged_in_at)
        if tokens.refreshed:
            smtp_login = tokens.login(settings.smtp.auth)
        note_step("the preflight (SMTP)")
        smtp_session = _Session(settings.smtp, settings.tls, deadline, transcript)
        smtp_started = now()

        def smtp_open(login: Login) -> Security:
            try:
                return smtp_session.open(login, cleartext)
            except (OSError, smtplib.SMTPException) as exc:
                raise smtp_session.network_failure(exc) from exc

        try:
            smtp_security = _with_fresh_token(smtp_open, smtp_login, settings.smtp.auth, tokens)
            smtp_done = now()
            smtp = _smtp_leg(smtp_session, smtp_security, smtp_started)
        finally:
            smtp_session.close()
        total_ms = _ms(started, smtp_done)
    finally:
        deadline.release()
    channels = [
        Channel("Total", total_ms, CHANNEL_IDS["Total"], limit_max_warning=settings.output.warning_ms,
                limit_max_error=settings.output.error_ms),
        Channel("SMTP Connect and Login", _ms(smtp_started, smtp_done), CHANNEL_IDS["SMTP Connect and Login"]),
        Channel("IMAP Connect and Login", imap_ms, CHANNEL_IDS["IMAP Connect and Login"]),
    ]
    for name, leg in (("SMTP Certificate", smtp), ("IMAP Certificate", imap)):
        if leg.certificate_days is not None:
            channels.append(Channel(name, leg.certificate_days, CHANNEL_IDS[name], unit="Custom", custom_unit="days"))
    notes = [_fallback_note("SMTP", smtp_security), _fallback_note("IMAP", imap_security), *cleartext]
    text = summary(smtp, imap, settings.imap.mailbox, total_ms, [note for note in notes if note])
    limit = limit_state(total_ms, settings.output)
    if limit != "ok":
        bound = settings.output.error_ms if limit == "error" else settings.output.warning_ms
        text = f"Total above the {limit} limit of {bound:g} ms. {text}"
    return Report.success(tuple(channels), text, limit=limit, legs=(smtp, imap))


def summary(smtp: LegDetail, imap: LegDetail, mailbox: str, total_ms: float, notes: List[str]) -> str:
    """One line: both legs, what the IMAP server offers, and anything the sensor would miss."""
    offers = dict(imap.offers)

    def login(leg: LegDetail) -> str:
        return "no login" if leg.auth == "none" else f"login {leg.auth} accepted"

    text = (
        f"Preflight passed in {total_ms:.1f} ms, nothing sent: SMTP {smtp.server} over {smtp.security}, "
        f"{login(smtp)} (AUTH offered: {dict(smtp.offers).get('AUTH')}); IMAP {imap.server} over {imap.security}, "
        f"{login(imap)}, mailbox {mailbox!r} selected; IMAP offers "
        + ", ".join(f"{name} {offers[name]}" for name in IMAP_FEATURES)
        + f", AUTH {offers.get('AUTH')}."
    )
    missing = []
    if offers.get("UIDPLUS") == "no":
        missing.append("without UIDPLUS the sensor expunges its probe only when no other message is flagged "
                       "\\Deleted (else it stays flagged until a later run)")
    if offers.get("IDLE") == "no":
        missing.append("without IDLE the sensor polls (--interval)")
    notes = missing + notes
    if notes:
        text += " Note: " + "; ".join(notes) + "."
    return text


def _ms(start: float, end: float) -> float:
    return max(0.0, (end - start) * 1000.0)


def _imap_leg(session: ImapSession) -> LegDetail:
    client = session.client
    assert client is not None
    after = {c.decode("ascii", "replace").upper() for c in client.capabilities()}
    before = {c.upper() for c in session.login_capabilities} | after
    offers: List[Tuple[str, str]] = [(name, "yes" if name in after else "no") for name in IMAP_FEATURES]
    mechanisms = sorted(c[5:] for c in before if c.startswith("AUTH="))
    offers.append(("AUTH", " ".join(mechanisms) or "(none announced)"))
    steps = (("connect, login and SELECT", _ms(session.connect_started_at, session.logged_in_at)),)
    return leg_detail("imap", session.settings.server, session.security, session.auth_method, steps, tuple(offers))


def _smtp_leg(session: _Session, security: Security, started: float) -> LegDetail:
    conn = session.conn
    assert conn is not None
    mechanisms = (conn.esmtp_features.get("auth") or "").upper().split()
    steps: List[Tuple[str, float]] = [("connect", _ms(started, session.connected_at))]
    if session.tls_started_at is not None and session.tls_done_at is not None:
        steps.append(("STARTTLS", _ms(session.tls_started_at, session.tls_done_at)))
    if session.auth_started_at is not None and session.authenticated_at is not None:
        steps.append(("login", _ms(session.auth_started_at, session.authenticated_at)))
    offers = (("AUTH", " ".join(mechanisms) or "(none announced)"),)
    return leg_detail("smtp", session.settings.server, security, session.auth_method, tuple(steps), offers)

"""Orchestration: tokens, arm the mailbox watch, send the probe, wait for it, delete it; one deadline.

The order is the data flow: (OAuth2 tokens) -> arm the watch (IMAP login, mailbox selected) ->
send (SMTP) -> wait -> delete -> measurement. Tokens come first so that fetching one is never
part of a leg's channel; the watch is armed before sending so that a fast delivery cannot slip
past it. Only this module knows the order of the steps; each step module knows only its own job.
"""

from __future__ import annotations

import time
from typing import Callable, List, Mapping, NoReturn, Optional, TypeVar

from .auth import Auth, BearerLogin, Login, OAuth2Auth
from .deadline import RESERVE_SECONDS, Deadline, note_step, run_start
from .errors import DeliveryTimeout, ImapError, RoundTripError, SendUncertain, SmtpError
from .imap_junk import JunkWatch
from .imap_mailbox import Mailbox
from .imap_session import IMAP_FAILURES, ImapSession
from .imap_wait import JUNK, Found, receive_result, wait_for
from .measurement import Measurement, evaluate, junk_error
from .probe import ProbeMail, build_probe
from .report import Report
from .settings import JunkIs, SearchMethod, Settings, TlsMode, TlsSettings
from .smtp_send import SendResult, send_probe
from .state import SweepState
from .transcript import Transcript
from .verdicts import parse_verdicts

T = TypeVar("T")


class Tokens:
    """The token step: an OAuth2 leg's Auth -> a BearerLogin, and the time that took."""

    def __init__(self, deadline: Deadline, environ: Mapping[str, str], transcript: Transcript, tls: TlsSettings):
        self.deadline = deadline
        self.environ = environ
        self.transcript = transcript
        self.tls = tls  # the token endpoint is verified like the mail servers (--ca-file, --insecure)
        self.seconds = 0.0  # spent getting tokens (0 when every token came from the cache)
        self.used = False
        self.refreshed = False  # a refused token was replaced: other legs may share it

    def login(self, auth: Auth, refresh: bool = False) -> Login:
        if not isinstance(auth, OAuth2Auth):
            return auth
        from .oauth2 import get_token  # only runs that use OAuth2 import it
        from .tls import make_context

        self.used = True
        note_step(f"getting the OAuth2 token for {auth.user}")
        token = get_token(auth.source, self.deadline, self.environ, refresh=refresh, transcript=self.transcript,
                          context=make_context(self.tls))
        self.seconds += token.elapsed
        self.refreshed = self.refreshed or refresh
        return BearerLogin(auth.user, token.value, auth.mechanism, auth.allow_plain_loopback)


def run_deadline(settings: Settings) -> Deadline:
    """The run's budget, counted from the process start (not from the end of the imports)."""
    return Deadline(settings.timeout, run_start())


def run_round_trip(settings: Settings, transcript: Transcript, environ: Mapping[str, str],
                   deadline: Optional[Deadline] = None) -> Report:
    deadline = deadline or run_deadline(settings)
    cleartext: List[str] = []  # a password sent without TLS: said on every outcome
    try:
        return _run(settings, transcript, environ, deadline, cleartext)
    except RoundTripError as exc:
        exc.notes.extend(note for note in cleartext if note not in exc.notes)
        raise
    finally:
        deadline.release()


def _run(settings: Settings, transcript: Transcript, environ: Mapping[str, str], deadline: Deadline,
         cleartext: List[str]) -> Report:
    state = SweepState(settings.sensor_id, environ)
    sweep_due = state.sweep_due()
    notes = budget_notes(settings)
    tokens = Tokens(deadline, environ, transcript, settings.tls)
    imap_login = tokens.login(settings.imap.auth)
    smtp_login = tokens.login(settings.smtp.auth)
    probe = build_probe(settings.mail, settings.sensor_id, settings.timeout)
    transcript.note("RUN", f"probe {probe.message_id}, subject {probe.subject!r}, sensor {settings.sensor_id}")
    with ImapSession(settings.imap, settings.tls, deadline, transcript) as session:
        try:
            _with_fresh_token(session.open, imap_login, settings.imap.auth, tokens)
        finally:
            cleartext.extend(session.cleartext)
        mailbox = Mailbox(session, settings.imap.search)
        junk = JunkWatch(session, settings.delivery, settings.imap.search)
        junk.arm()  # before the send, like the mailbox: in no timing channel
        if tokens.refreshed:  # the IMAP leg replaced a shared token: take the new one from the cache
            smtp_login = tokens.login(settings.smtp.auth)
        state.probe_in_flight(probe.guid, probe.marker.sent)

        def send(login: Login) -> SendResult:
            return send_probe(settings.smtp, settings.tls, login, probe, deadline, transcript, cleartext)

        try:
            sent = _with_fresh_token(send, smtp_login, settings.smtp.auth, tokens)
        except SendUncertain as exc:
            _settle_uncertain_send(session, mailbox, probe, exc)
        found = wait_for(session, mailbox, probe, sent.accepted_at, junk)
        verdicts = parse_verdicts(found.headers, settings.delivery.authserv_id)  # read before deleting
        box = junk.box if found.landed == JUNK and junk.box is not None else mailbox
        try:
            deletion = "expunged" if box.delete(found.uid) else "flagged"
        except ImapError as exc:
            deletion = "failed"
            where = f" in {junk.name!r}" if box is not mailbox else ""
            notes.append(f"the probe (UID {found.uid}{where}) was not deleted ({exc.cause}); a later run removes it")
        back = box is mailbox
        if not back:
            try:
                junk.reselect_mailbox()  # the leftover sweep works in the mailbox
                back = True
            except IMAP_FAILURES as exc:
                notes.append(f"leftover probes not looked for ({session.network_failure(exc).cause})")
        if deletion == "expunged" and back:
            notes.extend(_sweep(mailbox, settings, state, sweep_due, probe.guid))
        if state.note:
            notes.append(state.note)
        received = receive_result(session, found, deletion, verdicts, junk.name)
    measurement = Measurement(
        send=sent,
        receive=received,
        search="server search" if settings.imap.search is SearchMethod.SERVER else "local search",
        token_seconds=tokens.seconds if tokens.used else None,
        notes=tuple(notes + cleartext),
        tls_legs=tuple(leg for leg, mode in (("SMTP", settings.smtp.tls), ("IMAP", settings.imap.tls))
                       if mode is not TlsMode.OFF),
    )
    if received.landed == JUNK and settings.delivery.junk_is is JunkIs.ERROR:
        raise junk_error(measurement)
    return evaluate(measurement, settings.output)


def _with_fresh_token(step: Callable[[Login], T], login: Login, auth: Auth, tokens: Tokens) -> T:
    """Run a leg; if its server refused a (cached) OAuth2 token, fetch a new one and try once more."""
    try:
        return step(login)
    except RoundTripError as exc:
        if not exc.token_refused:
            raise
        tokens.transcript.note("OAUTH2", "the server refused the token: dropping it and fetching a new one")
        return step(tokens.login(auth, refresh=True))


def budget_notes(settings: Settings) -> List[str]:
    """Say where the run's budget (--timeout) caps a longer setting."""
    usable = settings.timeout - RESERVE_SECONDS
    notes = []
    for option, value in (
        ("--max-trip-time", settings.imap.max_trip_time),
        ("--smtp-timeout", settings.smtp.timeout),
        ("--imap-timeout", settings.imap.timeout),
    ):
        if value > usable:
            notes.append(f"{option} {value:g} s is capped by the run's budget (--timeout {settings.timeout:g} s)")
    return notes


def _settle_uncertain_send(session: ImapSession, mailbox: Mailbox, probe: ProbeMail,
                           uncertain: SendUncertain) -> NoReturn:
    """The SMTP answer to DATA never came: look for the probe anyway, then fail the SMTP step."""
    found: Optional[Found] = None
    try:
        found = wait_for(session, mailbox, probe, uncertain.sent_at)
    except DeliveryTimeout:
        outcome = "and the probe did not arrive in the mailbox either"
    except ImapError as exc:
        outcome = f"and the mailbox could not be checked ({exc.cause})"
    else:
        outcome = (
            f"but the probe arrived {1000 * (found.found_at - uncertain.sent_at):.0f} ms after it was sent, "
            "so the server did take it"
        )
        try:
            mailbox.delete(found.uid)
        except ImapError:
            outcome += " (deleting it failed; a later run removes it)"
    raise SmtpError(
        f"{uncertain.cause}, {outcome}",
        server=uncertain.server,
        hint="Check the server's log for connections dropped or timed out after DATA "
        "(content filters, milters, queue problems)",
    ) from uncertain


def _sweep(mailbox: Mailbox, settings: Settings, state: SweepState, due: bool, current: str) -> List[str]:
    """Remove leftover probes when some may exist (see state.py): everything marked when a sweep
    is due, else only this sensor's own late probes, by GUID, when some are outstanding."""
    late = [guid for guid in state.late_probes(time.time()) if guid != current]
    if not due and not late:
        state.finished(swept=False, own_probes_left=False)
        return []
    try:
        sweep = mailbox.sweep(settings.sensor_id, time.time(), guids=() if due else late)
    except ImapError as exc:
        return [f"looking for leftover probes failed: {exc.cause}"]
    state.finished(swept=due, own_probes_left=sweep.kept_own > 0, resolved=sweep.removed_guids)
    notes = []
    if sweep.removed_own:
        which = "earlier runs of this sensor" if due else "earlier runs of this sensor that arrived late"
        notes.append(f"removed {sweep.removed_own} leftover probe(s) of {which}")
    if sweep.removed_foreign:
        notes.append(f"removed {sweep.removed_foreign} probe(s) of other sensors older than a day")
    return notes

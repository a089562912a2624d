"""Orchestration: arm the mailbox watch, send the probe, wait for it, delete it; one deadline.

The watch is armed before sending so that a fast delivery cannot slip past it. Only this module
knows the order of the steps; each step module knows only its own protocol.
"""

from __future__ import annotations

import time
from typing import List, Mapping, NoReturn

from .deadline import RESERVE_SECONDS, Deadline
from .errors import DeliveryTimeout, ImapError, SendUncertain, SmtpError
from .imap_wait import MailboxWatch
from .measurement import Measurement, evaluate
from .probe import ProbeMail, build_probe
from .report import Report
from .settings import SearchMethod, Settings
from .smtp_send import send_probe
from .state import SweepState
from .transcript import Transcript


def run_round_trip(settings: Settings, transcript: Transcript, environ: Mapping[str, str]) -> Report:
    deadline = Deadline(settings.timeout)
    state = SweepState(settings.sensor_id, environ)
    sweep_due = state.sweep_due()
    notes = budget_notes(settings)
    probe = build_probe(settings.mail, settings.sensor_id, settings.timeout)
    transcript.note("RUN", f"probe {probe.message_id}, subject {probe.subject!r}, sensor {settings.sensor_id}")
    watch = MailboxWatch(settings.imap, settings.tls, deadline, transcript)
    try:
        watch.open()
        state.probe_in_flight()
        try:
            sent = send_probe(settings.smtp, settings.tls, probe, deadline, transcript)
        except SendUncertain as exc:
            _settle_uncertain_send(watch, probe, exc)
        uid, found_at, detection, checks = watch.wait_for(probe, sent.accepted_at)
        try:
            deleted = watch.delete(uid)
        except ImapError as exc:
            deleted = False
            notes.append(f"deleting the probe (UID {uid}) failed: {exc.cause}; a later run removes it")
        if deleted:
            notes.extend(_sweep(watch, settings, state, sweep_due))
    finally:
        watch.close()
        deadline.release()
    measurement = Measurement(
        send=sent,
        receive=watch.result(uid, found_at, detection, checks, deleted),
        search="server search" if settings.imap.search is SearchMethod.SERVER else "local search",
        notes=tuple(notes),
    )
    return evaluate(measurement, settings.output)


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


def _settle_uncertain_send(watch: MailboxWatch, probe: ProbeMail, uncertain: SendUncertain) -> NoReturn:
    """The SMTP answer to DATA never came: look for the probe anyway, then fail the SMTP step."""
    try:
        uid, found_at, _, _ = watch.wait_for(probe, uncertain.sent_at)
    except DeliveryTimeout:
        outcome = "and the probe did not arrive in the mailbox either"
    except ImapError as exc:
        outcome = f"and the mailbox could not be checked ({exc.cause})"
    else:
        outcome = (
            f"but the probe arrived {1000 * (found_at - uncertain.sent_at):.0f} ms after it was sent, "
            "so the server did take it"
        )
        try:
            watch.delete(uid)
        except ImapError:
            outcome += " (deleting it failed; a later run removes it)"
    raise SmtpError(
        f"{uncertain.cause}, {outcome}",
        server=uncertain.server,
        hint="Check the server's log for connections dropped or timed out after DATA "
        "(content filters, milters, queue problems)",
    ) from uncertain


def _sweep(watch: MailboxWatch, settings: Settings, state: SweepState, due: bool) -> List[str]:
    """Remove leftover probes when some may exist (see state.py)."""
    if not due:
        state.finished(swept=False, own_probes_left=False)
        return []
    try:
        sweep = watch.sweep(settings.sensor_id, time.time())
    except ImapError as exc:
        return [f"looking for leftover probes failed: {exc.cause}"]
    state.finished(swept=True, own_probes_left=sweep.kept_own > 0)
    notes = []
    if sweep.removed_own:
        notes.append(f"removed {sweep.removed_own} leftover probe(s) of earlier runs of this sensor")
    if sweep.removed_foreign:
        notes.append(f"removed {sweep.removed_foreign} probe(s) of other sensors older than a day")
    return notes

"""Orchestration: arm the mailbox watch, send the probe, wait for it, delete it; one deadline.

The watch is armed before sending so that a fast delivery cannot slip past it. Only this module
knows the order of the steps; each step module knows only its own protocol.
"""

from __future__ import annotations

from .deadline import Deadline
from .errors import ImapError
from .imap_wait import MailboxWatch
from .measurement import Measurement, evaluate
from .probe import build_probe
from .report import Report
from .settings import SearchMethod, Settings
from .smtp_send import send_probe
from .transcript import Transcript


def run_round_trip(settings: Settings, transcript: Transcript) -> Report:
    deadline = Deadline(settings.timeout)
    probe = build_probe(settings.mail)
    transcript.note("RUN", f"probe {probe.message_id}, subject {probe.subject!r}")
    watch = MailboxWatch(settings.imap, settings.tls, deadline, transcript)
    notes = []
    try:
        watch.open()
        sent = send_probe(settings.smtp, settings.tls, probe, deadline, transcript)
        uid, found_at, detection, checks = watch.wait_for(probe, sent.accepted_at)
        try:
            deleted = watch.delete(uid)
        except ImapError as exc:
            deleted = False
            notes.append(f"deleting the probe (UID {uid}) failed: {exc.cause}; a later run removes it")
    finally:
        watch.close()
    measurement = Measurement(
        send=sent,
        receive=watch.result(uid, found_at, detection, checks, deleted),
        search="server search" if settings.imap.search is SearchMethod.SERVER else "local search",
        notes=tuple(notes),
    )
    return evaluate(measurement, settings.output.channels)

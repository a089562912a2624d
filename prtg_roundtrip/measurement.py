"""From what the two steps observed to what PRTG is told: timings, channels, the text.

The legs, in milliseconds of the monotonic clock:
- Response Time (SMTP): start of the TCP connect -> the server's 250 after DATA.
- Response Time (IMAP): that 250 -> the mailbox check that saw the probe returned.
- Total: SMTP + IMAP.
For each leg configured to use TLS (any --smtp-tls / --imap-tls mode but off), `SMTP Certificate`
and `IMAP Certificate` give the days until the server's verified certificate expires, and -1
(NO_CERTIFICATE) when this run verified none: the connection fell back to plain text, or
--insecure skipped the check. PRTG keys channels by name, so the set depends on the settings
only, never on what a server offered in one run. Detailed channels (--channels detailed) split the legs further;
each states its start and end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from .errors import LandedInJunk
from .imap_wait import JUNK, ReceiveResult
from .report import Channel, LegDetail, Report
from .settings import ChannelSet, OutputSettings
from .smtp_send import SendResult
from .tls import Security
from .verdicts import METHODS


@dataclass(frozen=True)
class Measurement:
    """What both legs observed, ready to be judged and worded."""

    send: SendResult
    receive: ReceiveResult
    search: str  # "server search" or "local search"
    token_seconds: Optional[float] = None  # getting OAuth2 tokens, before both legs (None: no OAuth2)
    notes: Tuple[str, ...] = ()
    tls_legs: Tuple[str, ...] = ()  # "SMTP" / "IMAP": the legs whose TLS mode is not off

    @property
    def smtp_ms(self) -> float:
        return _ms(self.send.started_at, self.send.accepted_at)

    @property
    def imap_ms(self) -> float:
        return _ms(self.send.accepted_at, self.receive.found_at)

    @property
    def total_ms(self) -> float:
        return self.smtp_ms + self.imap_ms


def _ms(start: float, end: float) -> float:
    return max(0.0, (end - start) * 1000.0)


NO_CERTIFICATE = -1.0  # a certificate channel's value when no certificate was verified

# Script v2 identifies channels by number: these never change from run to run.
CHANNEL_IDS = {
    "Total": 10,
    "Response Time (SMTP)": 11,
    "Response Time (IMAP)": 12,
    "SMTP Certificate": 13,
    "IMAP Certificate": 14,
    "SMTP Connect": 20,
    "SMTP TLS Handshake": 21,
    "SMTP Auth": 22,
    "SMTP Submit": 23,
    "IMAP Connect and Login": 24,
    "IMAP Checks": 25,
    "IMAP Push Used": 26,
    "Token": 27,
    "SMTP Connect and Login": 28,  # prtg-roundtrip check: connect start -> AUTH accepted (or EHLO answered)
    # where the probe landed and the receiving server's verdicts (value lookups, see lookups/)
    "Landed": 30,
    "SPF": 31,
    "DKIM": 32,
    "DMARC": 33,
    "Spam Score": 34,
}
# Value lookups shipped in prtg_roundtrip/lookups/ (<id>.ovl); the values never change meaning.
LANDED_LOOKUP = "prtg.roundtrip.landed"
AUTH_LOOKUP = "prtg.roundtrip.authresult"
LANDED = {"not arrived": 0, "inbox": 1, "junk": 2}


def _channel(name: str, value: float, **kwargs: Any) -> Channel:
    return Channel(name, value, CHANNEL_IDS[name], **kwargs)


def channels(m: Measurement, output: OutputSettings) -> Tuple[Channel, ...]:
    result: List[Channel] = [
        _channel("Total", m.total_ms, limit_max_warning=output.warning_ms, limit_max_error=output.error_ms),
        _channel("Response Time (SMTP)", m.smtp_ms),
        _channel("Response Time (IMAP)", m.imap_ms),
    ]
    s, r = m.send, m.receive
    # Days until each verified server certificate expires, for every leg set to use TLS: PRTG can
    # alarm before a certificate lapses (set a lower limit on the channel; -1 trips it too).
    for leg, days in (("SMTP", s.security.certificate_days), ("IMAP", r.security.certificate_days)):
        if leg in m.tls_legs or days is not None:
            value = NO_CERTIFICATE if days is None else days
            result.append(_channel(f"{leg} Certificate", value, unit="Custom", custom_unit="days"))
    # Where the probe landed, and SPF / DKIM / DMARC as the receiving server reported them
    # (verdicts.AUTH_RESULTS: 0 "not reported"), and its spam score where it wrote one.
    result.append(_channel("Landed", float(LANDED[r.landed]), unit="Custom", is_float=False, lookup=LANDED_LOOKUP))
    for method in METHODS:
        result.append(_channel(method.upper(), float(r.verdicts.lookup_value(method)), unit="Custom", is_float=False,
                               lookup=AUTH_LOOKUP))
    if r.verdicts.spam_score is not None:
        result.append(_channel("Spam Score", r.verdicts.spam_score, unit="Custom", custom_unit="points"))
    if output.channels is ChannelSet.DETAILED:
        # SMTP Connect: TCP connect start -> greeting read (implicit TLS handshake included)
        result.append(_channel("SMTP Connect", _ms(s.started_at, s.connected_at)))
        if s.tls_started_at is not None and s.tls_done_at is not None:
            # STARTTLS sent -> handshake done and EHLO answered again
            result.append(_channel("SMTP TLS Handshake", _ms(s.tls_started_at, s.tls_done_at)))
        if s.auth_started_at is not None and s.authenticated_at is not None:
            # AUTH sent -> 235 received
            result.append(_channel("SMTP Auth", _ms(s.auth_started_at, s.authenticated_at)))
        # MAIL FROM sent -> 250 after DATA
        result.append(_channel("SMTP Submit", _ms(s.ready_at, s.accepted_at)))
        # IMAP TCP connect start -> mailbox selected (TLS and LOGIN included); before the send
        result.append(_channel("IMAP Connect and Login", _ms(r.connect_started_at, r.logged_in_at)))
        result.append(_channel("IMAP Checks", float(r.checks), unit="Count", is_float=False))
        result.append(
            _channel("IMAP Push Used", 1.0 if r.detection == "IDLE push" else 0.0, unit="Custom",
                     is_float=False, custom_unit="IDLE")
        )
        if m.token_seconds is not None:
            # getting the OAuth2 access tokens, before the watch is armed (0 when cached)
            result.append(_channel("Token", m.token_seconds * 1000.0))
    return tuple(result)


def summary(m: Measurement) -> Tuple[str, bool]:
    """The one-line text and whether PRTG should show a warning."""
    s, r = m.send, m.receive
    where = f"the Junk folder {r.junk_folder!r}" if r.landed == JUNK else repr(r.mailbox)
    text = (
        f"Round trip {m.total_ms:.1f} ms: SMTP {s.server} over {s.security} accepted the probe in "
        f"{m.smtp_ms:.1f} ms; IMAP {r.server} over {r.security} found it in {where} "
        f"{m.imap_ms:.1f} ms later by {m.search} ({r.detection}, {r.checks} check{'s' if r.checks != 1 else ''})"
    )
    warning = False
    if r.deletion == "expunged":
        text += " and deleted."
    elif r.deletion == "failed":
        text += "; deleting it failed (see the note)."
        warning = True
    else:
        text += (
            "; it was only flagged \\Deleted, not expunged: the server lacks UIDPLUS and other messages "
            "are flagged \\Deleted, which a plain EXPUNGE would remove too. A later run removes it."
        )
        warning = True
    if r.landed == JUNK:
        text = f"{junk_cause(m)}. {text}"
        warning = True
    verdicts = r.verdicts.describe()
    if verdicts:
        text += f" Receiving server: {verdicts}."
    notes = [_fallback_note("SMTP", s.security), _fallback_note("IMAP", r.security), *m.notes]
    notes = [note for note in notes if note]
    if notes:
        text += " Note: " + "; ".join(notes) + "."
    return text, warning


def junk_cause(m: Measurement, first: str = "Arrived") -> str:
    return (f"{first} in Junk after {m.imap_ms:.0f} ms: the receiving server's spam filter classified the probe "
            f"(found in {m.receive.junk_folder!r})")


def junk_error(m: Measurement) -> LandedInJunk:
    """A probe in the Junk folder as the run's error (--junk-is error, the default)."""
    verdicts = m.receive.verdicts.describe()
    cause = junk_cause(m, "arrived") + (f"; receiving server: {verdicts}" if verdicts else "")
    cause += "; " + ("it was deleted there" if m.receive.deletion == "expunged" else
                     "deleting it there failed or was only flagged (see the note)")
    error = LandedInJunk(
        cause, server=m.receive.server,
        hint="Check the spam filter's verdict for the probe (its log, the headers above): SPF, DKIM and "
        "DMARC of the sending domain, and the sending server's reputation; --junk-is warning makes this a warning",
    )
    error.notes.extend(note for note in m.notes if note)
    return error


def _fallback_note(leg: str, security: Security) -> str:
    if not security.fallback:
        return ""
    if security.encrypted:
        return f"{leg} used STARTTLS: {security.fallback}"
    return f"{leg} without TLS: {security.fallback}"


def limit_state(total_ms: float, output: OutputSettings) -> str:
    if output.error_ms is not None and total_ms > output.error_ms:
        return "error"
    if output.warning_ms is not None and total_ms > output.warning_ms:
        return "warning"
    return "ok"


def leg_detail(leg: str, server: str, security: Security, auth: str,
               steps: Tuple[Tuple[str, float], ...], offers: Tuple[Tuple[str, str], ...] = ()) -> LegDetail:
    """One leg's details for the readable formats, from what the leg observed."""
    return LegDetail(
        leg=leg, server=server, security=str(security), cipher=security.cipher,
        certificate_subject=security.certificate_subject, certificate_days=security.certificate_days,
        certificate_expires=security.certificate_expires, auth=auth or "none", steps=steps,
        offers=offers,
    )


def legs(m: Measurement) -> Tuple[LegDetail, LegDetail]:
    s, r = m.send, m.receive
    smtp_steps: List[Tuple[str, float]] = [("connect", _ms(s.started_at, s.connected_at))]
    if s.tls_started_at is not None and s.tls_done_at is not None:
        smtp_steps.append(("STARTTLS", _ms(s.tls_started_at, s.tls_done_at)))
    if s.auth_started_at is not None and s.authenticated_at is not None:
        smtp_steps.append(("login", _ms(s.auth_started_at, s.authenticated_at)))
    smtp_steps.append(("submit", _ms(s.ready_at, s.accepted_at)))
    imap_steps = (
        ("connect and login (before the send)", _ms(r.connect_started_at, r.logged_in_at)),
        (f"delivery ({r.detection}, {r.checks} check{'s' if r.checks != 1 else ''})", m.imap_ms),
    )
    return (
        leg_detail("smtp", s.server, s.security, s.auth, tuple(smtp_steps)),
        leg_detail("imap", r.server, r.security, r.auth, imap_steps),
    )


def evaluate(m: Measurement, output: OutputSettings) -> Report:
    text, warning = summary(m)
    limit = limit_state(m.total_ms, output)
    if limit != "ok":
        bound = output.error_ms if limit == "error" else output.warning_ms
        text = f"Total above the {limit} limit of {bound:g} ms. {text}"
    return Report.success(channels(m, output), text, warning=warning, limit=limit, legs=legs(m))

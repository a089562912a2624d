"""The probe mail: a message that only this sensor sends and that it can recognise for sure.

The subject follows PRTG's form, `<text> PRTG Roundtrip Mail: {GUID}` with an upper-case GUID.
A fresh Message-ID makes every probe unique (Gmail drops repeated identical messages), and the
`X-PRTG-Roundtrip` header marks it as a probe, so the sensor never mistakes a message that
merely quotes the subject for its own.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Optional

from .settings import MailSettings

SUBJECT_MARK = "PRTG Roundtrip Mail:"
MARKER_HEADER = "X-PRTG-Roundtrip"
_MARKER = re.compile(
    r"^guid=(?P<guid>[0-9A-F]{8}(?:-[0-9A-F]{4}){3}-[0-9A-F]{12}); sensor=(?P<sensor>[A-Za-z0-9._-]{1,64}); "
    r"sent=(?P<sent>\d{9,11}(?:\.\d+)?); budget=(?P<budget>\d{1,4})$"
)


@dataclass(frozen=True)
class Marker:
    """What the X-PRTG-Roundtrip header says: which sensor sent the probe, when, with what budget."""

    guid: str
    sensor: str
    sent: float  # Unix time
    budget: float  # the sending run's --timeout, seconds

    def header(self) -> str:
        return f"guid={self.guid}; sensor={self.sensor}; sent={self.sent:.3f}; budget={self.budget:.0f}"


def parse_marker(value: str) -> Optional[Marker]:
    """The marker, or None when the header is not exactly what this sensor writes."""
    match = _MARKER.fullmatch(" ".join(value.split()))
    if not match:
        return None
    return Marker(match["guid"], match["sensor"], float(match["sent"]), float(match["budget"]))


def probe_message_id(guid: str, domain: str) -> str:
    return f"<{guid.lower()}.prtg-roundtrip@{domain}>"


@dataclass(frozen=True)
class ProbeMail:
    """The probe message of one run and what identifies it."""

    guid: str  # upper case, without braces
    subject: str
    message_id: str  # with angle brackets
    sender: str
    recipient: str
    marker: Marker
    data: bytes  # the whole message, CRLF line ends

    @property
    def subject_token(self) -> str:
        """What a SEARCH for the subject looks for: the GUID, an IMAP atom (no quoting needed)."""
        return self.guid


def build_probe(
    mail: MailSettings,
    sensor: str,
    budget: float,
    sent_at: Optional[datetime] = None,
    guid: Optional[str] = None,
) -> ProbeMail:
    guid = (guid or str(uuid.uuid4())).upper()
    sent_at = sent_at or datetime.now(timezone.utc)
    marker = Marker(guid, sensor, round(sent_at.timestamp(), 3), budget)
    subject = f"{SUBJECT_MARK} {{{guid}}}"
    if mail.subject_text:
        subject = f"{mail.subject_text} {subject}"
    domain = mail.sender.rsplit("@", 1)[1]
    message_id = probe_message_id(guid, domain)

    # Unfolded header lines (RFC 5322 allows 998 characters): the marker and subject stay whole.
    msg = EmailMessage(policy=SMTP.clone(max_line_length=998))
    msg["From"] = mail.sender
    msg["To"] = mail.recipient
    msg["Subject"] = subject
    msg["Date"] = format_datetime(sent_at)
    msg["Message-ID"] = message_id
    msg[MARKER_HEADER] = marker.header()
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a probe
    msg.set_content(
        "This is a test message of the PRTG SMTP&IMAP round trip sensor (prtg-roundtrip).\n"
        "It measures how long mail takes to arrive and is deleted as soon as it is found.\n"
        f"Probe {guid}, sent {sent_at.isoformat(timespec='milliseconds')}.\n",
        cte="7bit",
    )
    return ProbeMail(
        guid=guid,
        subject=subject,
        message_id=message_id,
        sender=mail.sender,
        recipient=mail.recipient,
        marker=marker,
        data=msg.as_bytes(),
    )

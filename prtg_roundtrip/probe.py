"""The probe mail: a message that only this sensor sends and that it can recognise for sure.

The subject follows PRTG's form, `<text> PRTG Roundtrip Mail: {GUID}` with an upper-case GUID.
A fresh Message-ID makes every probe unique (Gmail drops repeated identical messages), and the
`X-PRTG-Roundtrip` header marks it as a probe, so the sensor never mistakes a message that
merely quotes the subject for its own.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ProbeMail:
    guid: str  # upper case, without braces
    subject: str
    message_id: str  # with angle brackets
    sender: str
    recipient: str
    data: bytes  # the whole message, CRLF line ends

    @property
    def subject_token(self) -> str:
        """What a SEARCH for the subject looks for: the GUID, an IMAP atom (no quoting needed)."""
        return self.guid


def build_probe(mail: MailSettings, sent_at: Optional[datetime] = None, guid: Optional[str] = None) -> ProbeMail:
    guid = (guid or str(uuid.uuid4())).upper()
    sent_at = sent_at or datetime.now(timezone.utc)
    subject = f"{SUBJECT_MARK} {{{guid}}}"
    if mail.subject_text:
        subject = f"{mail.subject_text} {subject}"
    domain = mail.sender.rsplit("@", 1)[1]
    message_id = f"<{guid.lower()}.prtg-roundtrip@{domain}>"

    msg = EmailMessage(policy=SMTP)
    msg["From"] = mail.sender
    msg["To"] = mail.recipient
    msg["Subject"] = subject
    msg["Date"] = format_datetime(sent_at)
    msg["Message-ID"] = message_id
    msg[MARKER_HEADER] = f"guid={guid}"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a probe
    msg.set_content(
        "This is a test message of the PRTG SMTP&IMAP round trip sensor (prtg-roundtrip).\n"
        "It measures how long mail takes to arrive and is deleted as soon as it is found.\n"
        f"Probe {guid}, sent {sent_at.isoformat(timespec='milliseconds')}.\n"
    )
    return ProbeMail(
        guid=guid,
        subject=subject,
        message_id=message_id,
        sender=mail.sender,
        recipient=mail.recipient,
        data=msg.as_bytes(),
    )

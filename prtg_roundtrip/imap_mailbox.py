"""What the sensor does inside the selected mailbox: look for the probe, delete it, sweep leftovers.

Only messages whose UID is at least the UIDNEXT noted when the watch was armed can be the probe,
so every check costs the same however full the mailbox is. A check asks the server (UID SEARCH
... SUBJECT) or reads the new messages' headers itself (BODY.PEEK, which sets no flag); either way
a candidate is the probe only if its Message-ID is the probe's.

Deleting never touches another message: the probe is flagged \\Deleted and removed with UID
EXPUNGE (UIDPLUS); without UIDPLUS a plain EXPUNGE only when no other message is flagged
\\Deleted. The stale-probe rule (`leftover_verdict`) decides which leftovers are provably this
sensor's (or, after a day, another sensor's) expired probes; nothing else is ever removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Iterable, List, Optional, Tuple

from imapclient import IMAPClient

from .deadline import now
from .imap_session import IMAP_FAILURES, ImapSession
from .probe import MARKER_HEADER, SUBJECT_MARK, Marker, ProbeMail, parse_marker, probe_message_id
from .settings import SearchMethod
from .verdicts import VERDICT_FIELDS

# The probe's own fields, and the receiving server's verdicts (read in the same FETCH: no extra
# round trip), all with BODY.PEEK, which sets no flag.
_HEADERS = f"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT {MARKER_HEADER.upper()} {' '.join(VERDICT_FIELDS)})]"
_DELETED = b"\\Deleted"
FOREIGN_PROBE_AGE = 86400.0  # another sensor's probe is left alone until it is a day old
MAX_CANDIDATES = 200  # one answer never makes the sensor fetch or parse more than this


@dataclass(frozen=True)
class Check:
    """One look at the mailbox."""

    uid: Optional[int]  # the probe's UID, if this check found it
    answered_at: float  # when the answer that decided it came
    searched: bool  # a search was made (not only a NOOP)
    headers: bytes = b""  # the probe's header fields as fetched (verdicts.parse_verdicts reads them)


@dataclass(frozen=True)
class Sweep:
    """Leftover probes of earlier runs found after this run's probe was deleted."""

    removed_own: int = 0  # this sensor's, older than their run's budget
    removed_foreign: int = 0  # other sensors', older than a day
    kept_own: int = 0  # this sensor's, still within their run's budget (in flight)
    kept_foreign: int = 0  # other sensors', younger than a day
    removed_guids: Tuple[str, ...] = ()  # the GUIDs of the probes removed


def leftover_verdict(marker: Marker, sensor: str, wall_now: float) -> str:
    """'remove', 'keep-own' or 'keep-foreign' for a verified probe: this sensor's probe is stale
    once its run's budget has passed (PRTG never runs one sensor twice at a time, so nobody
    waits for it any more); another sensor's only after a day."""
    age = wall_now - marker.sent
    if marker.sensor == sensor:
        return "remove" if age > marker.budget else "keep-own"
    return "remove" if age > FOREIGN_PROBE_AGE else "keep-foreign"


def verified_marker(headers: Message) -> Optional[Marker]:
    """The probe marker, if the marker header parses and agrees with subject and Message-ID."""
    marker = parse_marker(str(headers.get(MARKER_HEADER, "")))
    if marker is None:
        return None
    subject = str(headers.get("Subject", ""))
    message_id = str(headers.get("Message-ID", "")).strip()
    domain = message_id.rpartition("@")[2].rstrip(">")
    if f"{SUBJECT_MARK} {{{marker.guid}}}" not in subject or message_id != probe_message_id(marker.guid, domain):
        return None
    return marker


class Mailbox:
    """The selected mailbox of an open ImapSession."""

    def __init__(self, session: ImapSession, search: SearchMethod, name: Optional[str] = None):
        self.session = session
        self.search = search
        self.name = name  # another folder than --mailbox (the Junk folder, see imap_junk); None: --mailbox
        self.uidvalidity = session.uidvalidity
        self.uidnext = session.uidnext
        self.exists_seen_elsewhere()  # SELECT's own EXISTS is the baseline, not news

    @property
    def client(self) -> IMAPClient:
        client = self.session.client
        assert client is not None
        return client

    def check(self, probe: ProbeMail, force: bool) -> Check:
        """A NOOP, which makes the server report what arrived (EXISTS); only then, or when
        `force`d, a search among the new UIDs."""
        self.session.arm_timeout()
        _, responses = self.client.noop()
        self.notice_uidvalidity(responses)
        announced = self.exists_seen_elsewhere() | announces_new_mail(responses)  # drain both, always
        if not (force or announced):
            return Check(None, now(), False)
        first = self.uidnext or 1
        criteria: List[object] = ["UID", f"{first}:*"]
        if self.search is SearchMethod.SERVER:
            criteria += ["SUBJECT", probe.subject_token]
        # "n:*" also matches the highest UID when it is below n: keep only UIDs >= n. The newest
        # first, and never more than MAX_CANDIDATES: a server answering with thousands of UIDs
        # cannot make one check expensive.
        candidates = sorted((u for u in self.client.search(criteria) if u >= first), reverse=True)
        seen_at = now()
        if not candidates:
            return Check(None, seen_at, True)
        # Server search: the FETCH only confirms the hit, which SEARCH already timed. Local
        # search: the FETCH is the match itself (right even where the server's SEARCH lags).
        headers = self.header_bytes(candidates[:MAX_CANDIDATES])
        if self.search is SearchMethod.LOCAL:
            seen_at = now()
        parser = BytesHeaderParser(policy=default_policy)
        for uid, raw in headers:
            if str(parser.parsebytes(raw).get("Message-ID", "")).strip() == probe.message_id:
                return Check(uid, seen_at, True, raw)
        return Check(None, seen_at, True)

    def exists_seen_elsewhere(self) -> bool:
        """An EXISTS that came with another command's answer (imaplib keeps it aside)."""
        imap = getattr(self.session.client, "_imap", None)
        if imap is None:
            return False
        _, data = imap.response("EXISTS")  # pops it
        return data not in ([None], None, [])

    def notice_uidvalidity(self, responses: object) -> None:
        """A new UIDVALIDITY (mailbox recreated) voids UIDNEXT: look at the whole mailbox."""
        match = re.search(rb"\[UIDVALIDITY (\d+)\]", repr(responses).encode())
        if match and self.uidnext is not None and int(match.group(1)) != self.uidvalidity:
            self.session.transcript.note("IMAP", "UIDVALIDITY changed: checking the whole mailbox from now on")
            self.uidvalidity, self.uidnext = int(match.group(1)), None

    def header_fields(self, messages: List[int]) -> List[Tuple[int, Message]]:
        """The probe-relevant header fields of `messages`, read with BODY.PEEK (no \\Seen)."""
        parser = BytesHeaderParser(policy=default_policy)
        return [(uid, parser.parsebytes(raw)) for uid, raw in self.header_bytes(messages)]

    def header_bytes(self, messages: List[int]) -> List[Tuple[int, bytes]]:
        """The same fields, as the raw bytes the server sent."""
        fetched = self.client.fetch(messages, [_HEADERS])
        result: List[Tuple[int, bytes]] = []
        for uid, data in fetched.items():
            raw = next((v for k, v in data.items() if bytes(k).startswith(b"BODY[")), b"")
            result.append((int(uid), bytes(raw or b"")))
        return result

    # -- deleting -------------------------------------------------------------------------
    def delete(self, uid: int) -> bool:
        """Remove the probe: True if expunged, False if only flagged (no UIDPLUS, see expunge)."""
        self.session.phase = "deleting the probe"
        self.session.arm_timeout()
        try:
            return self.expunge([uid])
        except IMAP_FAILURES as exc:
            raise self.session.network_failure(exc) from exc

    def expunge(self, uids: List[int]) -> bool:
        """Flag `uids` \\Deleted and expunge exactly them; False if they could only be flagged."""
        client = self.client
        client.add_flags(uids, [_DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
            return True
        # A plain EXPUNGE would also remove what other clients flagged \Deleted: only expunge
        # when no other message is flagged so.
        if [u for u in client.search(["DELETED"]) if u not in uids]:
            self.session.transcript.note("IMAP", "no UIDPLUS and other messages are flagged \\Deleted: not expunging")
            return False
        client.expunge()
        return True

    # -- leftovers ------------------------------------------------------------------------
    def sweep(self, sensor: str, wall_now: float, guids: Iterable[str] = ()) -> Sweep:
        """Remove leftover probes that runs killed or timed out left behind: all marked messages,
        or (with `guids`) only this sensor's own probes with these GUIDs."""
        guids = list(guids)
        self.session.phase = "removing leftover probes"
        self.session.arm_timeout()
        try:
            criteria = _guid_criteria(guids) or ["HEADER", MARKER_HEADER, "guid="]
            candidates = sorted(self.client.search(criteria), reverse=True)[:MAX_CANDIDATES]
            if not candidates:
                return Sweep()
            stale: List[int] = []
            removed: List[str] = []
            counts = {"remove-own": 0, "remove-foreign": 0, "keep-own": 0, "keep-foreign": 0}
            for uid, headers in self.header_fields(candidates):
                marker = verified_marker(headers)
                if marker is None or (guids and (marker.sensor != sensor or marker.guid not in guids)):
                    continue
                verdict = leftover_verdict(marker, sensor, wall_now)
                if verdict == "remove":
                    stale.append(uid)
                    removed.append(marker.guid)
                    verdict += "-own" if marker.sensor == sensor else "-foreign"
                counts[verdict] += 1
            if stale and not self.expunge(stale):
                return Sweep(kept_own=counts["keep-own"] + counts["remove-own"],
                             kept_foreign=counts["keep-foreign"] + counts["remove-foreign"])
            if stale:
                self.session.transcript.note("IMAP", f"removed {len(stale)} leftover probe(s): UIDs {stale}")
            return Sweep(counts["remove-own"], counts["remove-foreign"], counts["keep-own"], counts["keep-foreign"],
                         tuple(removed))
        except IMAP_FAILURES as exc:
            raise self.session.network_failure(exc) from exc


def _guid_criteria(guids: List[str]) -> List[object]:
    """SEARCH criteria matching the subject of any of these probes (GUIDs are IMAP atoms)."""
    criteria: List[object] = []
    for guid in guids:
        criteria = ["OR", "SUBJECT", guid, *criteria] if criteria else ["SUBJECT", guid]
    return criteria


def announces_new_mail(responses: object) -> bool:
    """EXISTS or RECENT among parsed untagged responses such as [(3, b'EXISTS')]."""
    return any(
        isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT")
        for r in (responses if isinstance(responses, (list, tuple)) else ())
    )

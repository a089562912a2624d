"""How the receiving server judged the probe, and where its Junk folder is: pure functions.

`parse_verdicts` reads the delivered probe's header fields (the raw bytes of a
`BODY.PEEK[HEADER.FIELDS (...)]` answer) into SPF, DKIM and DMARC results from RFC 8601
`Authentication-Results` fields, and a spam score from `X-Spam-Score`, `X-Spam-Status`
(`score=`) or `X-Rspamd-Score`. Only the fields the receiving server added count: those whose
authserv-id is `--authserv-id`, or by default the id of the topmost (nearest) field; a field a
sender forged with another id is ignored. The input is whatever a server sent: any bytes give a
result, never an exception, and the work is bounded (MAX_HEADER_BYTES, MAX_FIELDS).

`find_junk_folder` chooses the folder to watch from a LIST answer: the one with the `\\Junk`
special-use attribute (RFC 6154), else the first of the common names (JUNK_NAMES), or the one
`--junk-folder` names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

# The header fields read before the probe is deleted (with the probe's own fields, by BODY.PEEK).
VERDICT_FIELDS = ("AUTHENTICATION-RESULTS", "X-SPAM-SCORE", "X-SPAM-STATUS", "X-RSPAMD-SCORE")

NOT_REPORTED = "not reported"
# Lookup values (prtg_roundtrip/lookups/prtg.roundtrip.authresult.ovl): stable, never reused.
AUTH_RESULTS = {
    NOT_REPORTED: 0,
    "pass": 1,
    "fail": 2,
    "softfail": 3,
    "neutral": 4,
    "none": 5,
    "temperror": 6,
    "permerror": 7,
    "policy": 8,  # RFC 8601 2.7.1: a DKIM signature valid but not acceptable by local policy
}
# Older spellings some servers still write (RFC 7001 and earlier drafts).
_ALIASES = {"hardfail": "fail", "error": "temperror"}
METHODS = ("spf", "dkim", "dmarc")

MAX_HEADER_BYTES = 65536  # more than this of header fields is not looked at
MAX_FIELDS = 64  # fields considered, topmost first
MAX_FIELD_CHARS = 4096  # of one unfolded field
MAX_SCORE = 1e6  # |score| beyond this is not a spam score


@dataclass(frozen=True)
class Verdicts:
    """What the receiving server said about the probe."""

    authserv_id: Optional[str] = None  # whose Authentication-Results were used (None: none found)
    spf: str = NOT_REPORTED
    dkim: str = NOT_REPORTED
    dmarc: str = NOT_REPORTED
    spam_score: Optional[float] = None
    ignored: int = 0  # Authentication-Results fields of other authserv-ids (a sender's, or forged)

    def lookup_value(self, method: str) -> int:
        return AUTH_RESULTS[getattr(self, method)]

    def describe(self) -> str:
        """'SPF pass, DKIM pass, DMARC pass (by mx.example.com), spam score 1.2', or ''."""
        parts = [f"{m.upper()} {getattr(self, m)}" for m in METHODS if getattr(self, m) != NOT_REPORTED]
        text = ", ".join(parts)
        if text and self.authserv_id:
            text += f" (by {self.authserv_id})"
        if self.spam_score is not None:
            text += (", " if text else "") + f"spam score {self.spam_score:g}"
        return text


NO_VERDICTS = Verdicts()


# -- header fields -------------------------------------------------------------------------
def header_fields(raw: bytes) -> List[Tuple[str, str]]:
    """(lower-case name, unfolded value) of each field, topmost first; junk lines are skipped."""
    if not isinstance(raw, (bytes, bytearray)):
        return []
    text = bytes(raw[:MAX_HEADER_BYTES]).decode("utf-8", "replace")
    fields: List[Tuple[str, str]] = []
    name: Optional[str] = None
    value: List[str] = []
    for line in re.split(r"\r?\n|\r", text):
        if line[:1] in (" ", "\t") and name is not None:
            if sum(map(len, value)) < MAX_FIELD_CHARS:
                value.append(line)
            continue
        if name is not None:
            fields.append((name, " ".join(value)[:MAX_FIELD_CHARS]))
            name = None
        if not line:
            continue  # the empty line that ends a header block (FETCH answers may hold several)
        head, colon, rest = line.partition(":")
        if colon and re.fullmatch(r"[!-9;-~]{1,76}", head):
            name, value = head.lower(), [rest]
        if len(fields) >= MAX_FIELDS:
            break
    if name is not None and len(fields) < MAX_FIELDS:
        fields.append((name, " ".join(value)[:MAX_FIELD_CHARS]))
    return fields


def strip_comments(text: str) -> str:
    """The text without RFC 5322 comments (nested, with quoted pairs); quoted strings kept."""
    out: List[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            out.append(ch)
            if ch == '"':
                quoted = False
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(" ")
        elif depth == 0:
            out.append(ch)
            if ch == '"':
                quoted = True
    return "".join(out)


def _split_semicolons(text: str) -> List[str]:
    """Split at ';' outside quoted strings."""
    parts: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


_AUTHSERV = re.compile(r'^\s*(?:"((?:[^"\\]|\\.){1,255})"|([^\s";]{1,255}))(?:\s+\d{1,5})?\s*$')
_RESINFO = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\s*(?:/\s*\d{1,5}\s*)?=\s*([A-Za-z0-9_-]{1,32})")


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results field: its authserv-id and its (method, result) pairs."""

    authserv_id: str
    results: Tuple[Tuple[str, str], ...]


def parse_authentication_results(value: str) -> Optional[AuthResults]:
    """One field's value, or None when it has no readable authserv-id."""
    parts = _split_semicolons(strip_comments(value))
    head = _AUTHSERV.match(parts[0])
    if head is None:
        return None
    authserv_id = head.group(1) if head.group(1) is not None else head.group(2)
    authserv_id = re.sub(r"\\(.)", r"\1", authserv_id) if head.group(1) is not None else authserv_id
    results: List[Tuple[str, str]] = []
    for part in parts[1:]:
        match = _RESINFO.match(part)
        if match:
            method, result = match.group(1).lower(), match.group(2).lower()
            results.append((method, _ALIASES.get(result, result)))
    return AuthResults(authserv_id, tuple(results))


def _combine(method: str, results: Iterable[str]) -> str:
    """One result per method: for DKIM (one result per signature) a pass wins; else the first."""
    known = [r for r in results if r in AUTH_RESULTS and r != NOT_REPORTED]
    if not known:
        return NOT_REPORTED
    if method == "dkim" and "pass" in known:
        return "pass"
    return known[0]


def spam_score(fields: Sequence[Tuple[str, str]]) -> Optional[float]:
    """The topmost spam score in a known field, or None."""
    for name, value in fields:
        if name in ("x-spam-score", "x-rspamd-score"):
            match = re.match(r"^\s*\[?\s*([+-]?\d{1,7}(?:\.\d{1,6})?)(?![\w.])", value)
        elif name == "x-spam-status":
            match = re.search(r"(?:^|[\s,;])score=([+-]?\d{1,7}(?:\.\d{1,6})?)(?![\w.])", value)
        else:
            continue
        if match:
            score = float(match.group(1))
            if math.isfinite(score) and abs(score) <= MAX_SCORE:
                return score
    return None


def parse_verdicts(raw: bytes, authserv_id: Optional[str] = None) -> Verdicts:
    """The receiving server's verdicts from raw header bytes (never raises)."""
    try:
        return _parse_verdicts(raw, authserv_id)
    except Exception:  # noqa: BLE001 - hostile input must never end the run; tested by fuzzing
        return NO_VERDICTS


def _parse_verdicts(raw: bytes, authserv_id: Optional[str]) -> Verdicts:
    fields = header_fields(raw)
    parsed = [r for r in (parse_authentication_results(v) for n, v in fields if n == "authentication-results") if r]
    chosen = authserv_id if authserv_id else (parsed[0].authserv_id if parsed else None)
    mine = [r for r in parsed if chosen is not None and r.authserv_id.lower() == chosen.lower()]
    found = {m: _combine(m, (res for r in mine for meth, res in r.results if meth == m)) for m in METHODS}
    return Verdicts(
        authserv_id=mine[0].authserv_id if mine else None,
        spf=found["spf"],
        dkim=found["dkim"],
        dmarc=found["dmarc"],
        spam_score=spam_score(fields),
        ignored=len(parsed) - len(mine),
    )


# -- the Junk folder -----------------------------------------------------------------------
# Names servers and clients give the Junk folder, in order of preference (compared without case).
JUNK_NAMES = (
    "Junk", "Junk E-mail", "Junk Email", "Junk Mail", "Junk-E-Mail", "Spam", "Bulk Mail", "Bulk",
    "[Gmail]/Spam", "[Google Mail]/Spam", "Spamverdacht", "Courrier indésirable", "Correo no deseado",
    "Posta indesiderata", "Ongewenste e-mail",
)
JUNK_OFF = "off"

ListEntry = Tuple[Sequence[object], object, object]  # IMAPClient's (flags, delimiter, name)


def _text(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _flags(entry: ListEntry) -> List[str]:
    flags = entry[0] if isinstance(entry[0], (list, tuple)) else ()
    return [_text(f).lower() for f in flags]


def find_junk_folder(entries: Iterable[ListEntry], mailbox: str = "INBOX") -> Optional[str]:
    """The Junk folder among LIST entries (never the watched mailbox itself), or None."""
    usable: List[Tuple[List[str], str, str]] = []
    for entry in entries:
        try:
            flags, delimiter, name = _flags(entry), _text(entry[1] or ""), _text(entry[2])
        except (IndexError, TypeError):
            continue
        if "\\noselect" in flags or "\\nonexistent" in flags or not name or _same(name, mailbox):
            continue
        usable.append((flags, delimiter, name))
    for flags, _, name in usable:
        if "\\junk" in flags:
            return name
    for wanted in JUNK_NAMES:
        for _, _delimiter, name in usable:
            if name.lower() == wanted.lower():
                return name
        for _, delimiter, name in usable:  # INBOX.Junk, INBOX/Spam (servers that nest under INBOX)
            if delimiter and name.lower() == f"inbox{delimiter}{wanted}".lower():
                return name
    return None


def _same(name: str, mailbox: str) -> bool:
    if name.upper() == "INBOX" or mailbox.upper() == "INBOX":
        return name.upper() == mailbox.upper()
    return name == mailbox


def junk_exists(entries: Iterable[ListEntry], name: str) -> bool:
    """Whether a selectable folder of this name is in the LIST answer (INBOX without case)."""
    for entry in entries:
        try:
            if _same(_text(entry[2]), name) and "\\noselect" not in _flags(entry):
                return True
        except (IndexError, TypeError):
            continue
    return False

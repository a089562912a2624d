"""What the sensor tells PRTG: channels and a text, or an error. Knows nothing of formats."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, List, Optional, Tuple

TEXT_LIMIT = 2000  # PRTG cuts the text at 2,000 characters
MAX_CHANNELS = 50

# What XML 1.0 forbids or discourages, and what no document should carry: C0 and C1 controls,
# DEL, lone surrogates (undecodable bytes), U+FDD0-U+FDEF and the two last code points of every
# plane (U+FFFE, U+FFFF, U+1FFFE, ...).
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17))
    + "]"
)
_BREAKS = re.compile("\\s*[\r\n\x85\u2028\u2029]+\\s*")


@dataclass(frozen=True)
class Channel:
    """One PRTG channel: a name unique in the sensor, a value and its unit."""

    name: str
    value: float
    id: int  # Script v2 channel id: stable from run to run, 10 and up
    unit: str = "TimeResponse"  # milliseconds in PRTG
    is_float: bool = True
    custom_unit: Optional[str] = None
    limit_max_warning: Optional[float] = None
    limit_max_error: Optional[float] = None
    lookup: Optional[str] = None  # a PRTG value lookup id (prtg_roundtrip/lookups/<id>.ovl): a whole number

    @property
    def value_text(self) -> str:
        """The value with '.' as decimal separator, whatever the locale."""
        if self.is_float:
            return f"{self.value:.3f}"
        return str(round(self.value))

    @property
    def has_limits(self) -> bool:
        return self.limit_max_warning is not None or self.limit_max_error is not None

    # Script v2 knows kinds, not units: times stay float milliseconds, everything else is a
    # whole count (certificate days rounded down: 0 means "expires within a day").
    @property
    def v2_kind(self) -> str:
        return "time_milliseconds" if self.unit == "TimeResponse" else "count"

    @property
    def v2_type(self) -> str:
        if self.lookup:
            return "lookup"
        return "float" if self.v2_kind == "time_milliseconds" else "integer"

    @property
    def v2_value(self) -> str:
        return self.value_text if self.v2_type == "float" else str(math.floor(self.value))


@dataclass(frozen=True)
class Report:
    """The outcome of one run, ready to render."""

    text: str
    channels: Tuple[Channel, ...] = field(default=())
    error: bool = False
    warning: bool = False  # success, but something needs the administrator's attention
    limit: str = "ok"  # where Total stands against --warning-ms/--error-ms: ok, warning, error

    @property
    def status(self) -> str:
        """Script v2's status, which carries no channel limits of its own."""
        if self.error or self.limit == "error":
            return "error"
        return "warning" if self.warning or self.limit == "warning" else "ok"

    @classmethod
    def failure(cls, text: str) -> Report:
        return cls(text=clean_text(text), error=True)

    @classmethod
    def success(cls, channels: Tuple[Channel, ...], text: str, warning: bool = False, limit: str = "ok") -> Report:
        names, ids = [c.name for c in channels], [c.id for c in channels]
        if len(set(names)) != len(names) or len(set(ids)) != len(ids) or len(names) > MAX_CHANNELS:
            raise ValueError(f"channel names and ids must be unique, at most {MAX_CHANNELS}: {names}")
        return cls(text=clean_text(text), channels=tuple(channels), warning=warning, limit=limit)

    def with_note(self, note: str) -> Report:
        return replace(self, text=clean_text(f"{self.text} {note}."))

    def redacted(self, secrets: Tuple[str, ...]) -> Report:
        from .transcript import redact

        return replace(self, text=clean_text(redact(self.text, usable_secrets(secrets))))


def usable_secrets(secrets: Iterable[str]) -> Tuple[str, ...]:
    """Secrets as redaction can look for them: each one that is valid text, and its cleaned form
    (texts are cleaned when a report is made, so a secret with a control character, a line
    break or undecodable bytes in it is found in that form too)."""
    found: List[str] = []
    for secret in secrets:
        for form in (secret, clean_text(secret)):
            try:
                form.encode("utf-8")
            except UnicodeEncodeError:
                continue
            if form and form not in found:
                found.append(form)
    return tuple(found)


def clean_text(text: str) -> str:
    """One line of printable text within PRTG's limit."""
    text = _CONTROL.sub("", _BREAKS.sub(" ", text)).strip()
    if len(text) > TEXT_LIMIT:
        text = text[: TEXT_LIMIT - 3].rstrip() + "..."
    return text

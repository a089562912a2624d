"""What the sensor tells PRTG: channels and a text, or an error. Knows nothing of formats."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, List, Optional, Tuple

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
    def limit_max_warning_text(self) -> Optional[str]:
        return None if self.limit_max_warning is None else number_text(self.limit_max_warning)

    @property
    def limit_max_error_text(self) -> Optional[str]:
        return None if self.limit_max_error is None else number_text(self.limit_max_error)

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
class LegDetail:
    """One leg as people and other monitors see it (text, Nagios long output, OpenMetrics):
    taken from what the leg observed (SendResult, ReceiveResult, Security), never re-queried."""

    leg: str  # "smtp" / "imap"
    server: str  # host:port
    security: str  # "TLSv1.3 (STARTTLS)", "plain text"
    cipher: Optional[str] = None
    certificate_subject: Optional[str] = None
    certificate_days: Optional[float] = None
    certificate_expires: Optional[float] = None  # Unix time
    auth: str = ""  # "none", "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"
    steps: Tuple[Tuple[str, float], ...] = ()  # (what, milliseconds), in order
    offers: Tuple[Tuple[str, str], ...] = ()  # (check) what matters to the sensor: ("IDLE", "yes"), ("AUTH", "PLAIN")

    def cleaned(self, clean: Callable[[str], str]) -> LegDetail:
        def opt(value: Optional[str]) -> Optional[str]:
            return None if value is None else clean(value)

        return replace(
            self, server=clean(self.server), security=clean(self.security), cipher=opt(self.cipher),
            certificate_subject=opt(self.certificate_subject), auth=clean(self.auth),
            steps=tuple((clean(name), ms) for name, ms in self.steps),
            offers=tuple((clean(name), clean(value)) for name, value in self.offers),
        )


@dataclass(frozen=True)
class Failure:
    """A failure in parts: the step, the server, the cause (with the server's own words) and
    what to try. `attempted` is False when the check could not even be attempted (refused
    parameters, an internal error, a stop): a Nagios UNKNOWN rather than CRITICAL."""

    step: str
    cause: str
    server: Optional[str] = None
    hint: Optional[str] = None
    attempted: bool = True

    def cleaned(self, clean: Callable[[str], str]) -> Failure:
        return replace(
            self, step=clean(self.step), cause=clean(self.cause),
            server=None if self.server is None else clean(self.server),
            hint=None if self.hint is None else clean(self.hint),
        )


@dataclass(frozen=True)
class Report:
    """The outcome of one run, ready to render."""

    text: str
    channels: Tuple[Channel, ...] = field(default=())
    error: bool = False
    warning: bool = False  # success, but something needs the administrator's attention
    limit: str = "ok"  # where Total stands against --warning-ms/--error-ms: ok, warning, error
    legs: Tuple[LegDetail, ...] = field(default=())  # per-leg details for the readable formats
    problem: Optional[Failure] = None  # an error in parts (error reports)
    target: Tuple[Tuple[str, str], ...] = field(default=())  # what was checked: smtp_host, ..., mailbox

    @property
    def status(self) -> str:
        """Script v2's status, which carries no channel limits of its own."""
        if self.error or self.limit == "error":
            return "error"
        return "warning" if self.warning or self.limit == "warning" else "ok"

    @property
    def attempted(self) -> bool:
        """False when the run could not be attempted (see Failure)."""
        return self.problem is None or self.problem.attempted

    @classmethod
    def failure(cls, text: str, problem: Optional[Failure] = None) -> Report:
        return cls(text=clean_text(text), error=True, problem=problem)

    @classmethod
    def success(cls, channels: Tuple[Channel, ...], text: str, warning: bool = False, limit: str = "ok",
                legs: Tuple[LegDetail, ...] = ()) -> Report:
        names, ids = [c.name for c in channels], [c.id for c in channels]
        if len(set(names)) != len(names) or len(set(ids)) != len(ids) or len(names) > MAX_CHANNELS:
            raise ValueError(f"channel names and ids must be unique, at most {MAX_CHANNELS}: {names}")
        return cls(text=clean_text(text), channels=tuple(channels), warning=warning, limit=limit, legs=tuple(legs))

    def with_note(self, note: str) -> Report:
        return replace(self, text=clean_text(f"{self.text} {note}."))

    def redacted(self, secrets: Tuple[str, ...]) -> Report:
        from .transcript import redact

        usable = usable_secrets(secrets)

        def clean(text: str) -> str:
            return clean_text(redact(text, usable))

        return replace(
            self, text=clean(self.text), legs=tuple(leg.cleaned(clean) for leg in self.legs),
            problem=None if self.problem is None else self.problem.cleaned(clean),
            target=tuple((name, clean(value)) for name, value in self.target),
        )


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


def number_text(value: float) -> str:
    """A finite number as PRTG's examples write it: integral values as integers (500, not
    500.0), others in plain decimal notation with '.' (0.00001, never 1e-05)."""
    if float(value).is_integer():
        return str(int(value))
    from decimal import Decimal

    return format(Decimal(repr(float(value))), "f")


def clean_text(text: str) -> str:
    """One line of printable text within PRTG's limit."""
    text = _CONTROL.sub("", _BREAKS.sub(" ", text)).strip()
    if len(text) > TEXT_LIMIT:
        text = text[: TEXT_LIMIT - 3].rstrip() + "..."
    return text

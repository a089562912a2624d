"""A redacted record of what the sensor said to the servers and what they answered.

Both protocol steps write here; nothing secret survives: every secret value the process knows
(secrets.registered(): passwords, tokens, client secrets, ...), its escaped and base64 forms, any
base64 word that decodes to (part of) a secret, and the arguments of AUTH/LOGIN commands are
replaced with `***` before a line is stored or shown. With an echo stream (--verbose) each line
is also written there as it happens.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import IO, Iterable, List, Optional, Tuple

from .secrets import register, registered

MASK = "***"
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/]{6,}={0,2}")

# SMTP "AUTH <mech> <initial response>" and IMAP "<tag> LOGIN <user> <password>" /
# "AUTHENTICATE <mech> <ir>": keep the verb, hide the rest.
_SECRET_COMMANDS = re.compile(r"(?i)\b(AUTH\s+[A-Z0-9_-]+|AUTHENTICATE\s+[A-Z0-9_-]+|LOGIN)\s+\S.*$")


def secret_forms(secrets: Iterable[str]) -> Tuple[str, ...]:
    """Each secret as it may appear on the wire: itself and its base64 encodings."""
    forms = set()
    for secret in secrets:
        if not secret:
            continue
        raw = _raw(secret)
        forms.add(secret)
        forms.add(base64.b64encode(raw).decode("ascii"))
        # base64 of the secret at each alignment inside a longer string (AUTH PLAIN "\0user\0pw")
        for shift in (1, 2):
            enc = base64.b64encode(b"\0" * shift + raw).decode("ascii")
            forms.add(enc[4 * ((shift + 2) // 3):].rstrip("="))
        forms.add(repr(secret)[1:-1])  # as Python's repr escapes it in debug lines
        forms.add(repr(raw)[2:-1])  # as bytes' repr escapes it (b'P\xc3\xa4ss')
    return tuple(sorted((f for f in forms if len(f) >= 3), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with every form of every secret (these and the registered ones) masked."""
    every = tuple(secrets) + registered()
    text = mask_base64(text, every)  # first: whole words, before a form inside one is cut out
    for form in secret_forms(every):
        text = text.replace(form, MASK)
    return text


def mask_base64(text: str, secrets: Iterable[str]) -> str:
    """Mask, whole, every base64 word that decodes to bytes holding a secret or its start or end
    (a server that echoes an AUTH PLAIN blob, perhaps cut short)."""
    raws = [_raw(s) for s in secrets if s and len(s) >= 3]
    if not raws:
        return text

    def replace(match: re.Match) -> str:
        word = match.group(0)
        decoded = _decode_base64(word)
        if decoded and any(_holds(decoded, raw) for raw in raws):
            return MASK
        return word

    return _BASE64_WORD.sub(replace, text)


def _raw(secret: str) -> bytes:
    """A secret's bytes: UTF-8, and for a value that came from undecodable bytes (surrogate
    escapes) those original bytes, never an exception."""
    try:
        return secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return secret.encode("utf-8", "surrogatepass")


def _decode_base64(word: str) -> bytes:
    body = word.rstrip("=")
    body = body[: len(body) - len(body) % 4] if len(body) % 4 == 1 else body
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _holds(decoded: bytes, secret: bytes) -> bool:
    if secret in decoded:
        return True
    least = min(len(secret), 4)
    for cut in range(least, len(secret)):
        if decoded.endswith(secret[:cut]) or decoded.startswith(secret[-cut:]):
            return True
    return False


class Transcript:
    """Timestamped, redacted protocol lines of one run."""

    def __init__(
        self, secrets: Iterable[str] = (), echo: Optional[IO[str]] = None, progress: Optional[IO[str]] = None
    ):
        register(*secrets)
        self._known: Tuple[str, ...] = ()
        self._forms: Tuple[str, ...] = ()
        self._echo = echo
        self._progress = progress  # a terminal: one updating status line while waiting
        self._progress_shown = False
        self._start = time.perf_counter()
        self._lines: List[str] = []
        self._in_auth = False
        # Lines carry milliseconds since this origin; tools (benchmarks) map them back to the
        # system-wide monotonic clock with it.
        self.note("RUN", f"clock origin {self._start:.6f} s (time.perf_counter)")

    def add(self, protocol: str, direction: str, text: str) -> None:
        """Record one line; direction is '>' (we sent), '<' (server said) or '*' (a note)."""
        text = text.rstrip("\r\n")
        if protocol == "SMTP" and direction == ">":
            text = self._smtp_auth_exchange(text)
        elif protocol == "SMTP" and direction == "<" and self._in_auth and not text.startswith("334"):
            self._in_auth = False
        if direction == ">":
            text = _SECRET_COMMANDS.sub(lambda m: m.group(1) + " " + MASK, text)
        known = registered()
        if known != self._known:  # a token fetched since the last line
            self._known, self._forms = known, secret_forms(known)
        text = mask_base64(text, self._known)
        for form in self._forms:
            text = text.replace(form, MASK)
        line = f"{(time.perf_counter() - self._start) * 1000:9.1f} ms {protocol} {direction} {text}"
        self._lines.append(line)
        if self._echo is not None:
            self._echo.write(line + "\n")
            self._echo.flush()

    def note(self, protocol: str, text: str) -> None:
        self.add(protocol, "*", text)

    def progress(self, text: Optional[str]) -> None:
        """Signs of life for a person at a console; None ends the status line."""
        if self._progress is None:
            return
        if text is None:
            if self._progress_shown:
                self._progress.write("\n")
        else:
            self._progress.write(f"\r  {text}\x1b[K")
        self._progress_shown = text is not None
        self._progress.flush()

    def _smtp_auth_exchange(self, text: str) -> str:
        # Client lines inside an AUTH exchange (AUTH LOGIN's user and password lines, a SASL
        # continuation) are credentials whatever they look like.
        if re.match(r"(?i)^[b'\"]*AUTH\b", text):
            self._in_auth = True
            return text
        if self._in_auth:
            return MASK
        return text

    def text(self) -> str:
        return "\n".join(self._lines) + ("\n" if self._lines else "")

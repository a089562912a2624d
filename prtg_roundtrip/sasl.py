"""SASL messages for both legs, as bytes: pure functions, no protocol code.

- PLAIN (RFC 4616): `authzid NUL authcid NUL password`, UTF-8, so non-ASCII logins work.
- XOAUTH2 (Google's and Microsoft's): `user=U ^A auth=Bearer T ^A ^A`.
- OAUTHBEARER (RFC 7628): a GS2 header naming the user, host and port, `auth=Bearer T`.
When a server refuses a token it first sends a challenge, a base64 JSON object such as
`{"status":"401","schemes":"bearer","scope":"..."}`; the client must answer it (XOAUTH2: an
empty line, OAUTHBEARER: a single ^A, RFC 7628 3.2.3) before the server's final refusal comes.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Iterable, Optional

from .auth import Mechanism

OAUTHBEARER_ABORT = b"\x01"  # RFC 7628: the client's answer to an error challenge
XOAUTH2_ABORT = b""


def plain(user: str, password: str) -> bytes:
    return b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: Optional[str] = None, port: Optional[int] = None) -> bytes:
    # RFC 5801 section 4: ',' and '=' in the authzid are escaped as =2C and =3D.
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    fields = f"n,a={authzid},\x01"
    if host:
        fields += f"host={host}\x01"
    if port:
        fields += f"port={port}\x01"
    return (fields + f"auth=Bearer {token}\x01\x01").encode()


def initial_response(mechanism: Mechanism, user: str, token: str, host: str, port: int) -> bytes:
    if mechanism is Mechanism.OAUTHBEARER:
        return oauthbearer(user, token, host, port)
    return xoauth2(user, token)


def abort_response(mechanism: Mechanism) -> bytes:
    """What the client sends after an error challenge, so the server can end the exchange."""
    return OAUTHBEARER_ABORT if mechanism is Mechanism.OAUTHBEARER else XOAUTH2_ABORT


def choose_mechanism(requested: Mechanism, offered: Iterable[str]) -> Optional[Mechanism]:
    """The mechanism to use, given the server's announced ones (upper case, e.g. 'XOAUTH2'),
    or None if the server offers none that fits. auto prefers the standard OAUTHBEARER."""
    names = {name.upper() for name in offered}
    if requested is Mechanism.AUTO:
        for candidate in (Mechanism.OAUTHBEARER, Mechanism.XOAUTH2):
            if candidate.value.upper() in names:
                return candidate
        return None
    return requested if requested.value.upper() in names else None


def describe_challenge(challenge: bytes) -> str:
    """A server's OAuth2 error challenge in words: 'status 401, scope "..."', or '' if it is none.

    `challenge` is the decoded (not base64) bytes, or the base64 text as bytes; both are tried.
    """
    data = _json_object(challenge)
    if data is None:
        try:
            data = _json_object(base64.b64decode(challenge, validate=True))
        except (binascii.Error, ValueError):
            data = None
    if data is None:
        return ""
    parts = []
    for key in ("status", "schemes", "scope", "error", "error_description"):
        value = data.get(key)
        if isinstance(value, (str, int)) and str(value):
            parts.append(f"{key} {_printable(str(value))}")
    return ", ".join(parts)


def _json_object(raw: bytes) -> Optional[dict]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:200]

"""How each leg logs in: a typed value per leg, built once from the parameters.

- NoAuth: SMTP without AUTH (IMAP always logs in).
- PasswordAuth: a user name and a password (SMTP AUTH PLAIN/LOGIN, IMAP LOGIN or AUTHENTICATE PLAIN).
- OAuth2Auth: a user name and a TokenSource that yields an access token, sent with SASL XOAUTH2
  or OAUTHBEARER (RFC 7628).

The protocol steps (smtp_send, imap_session) take one of these and know nothing of where the
secret came from; the token step (oauth2/) knows nothing of the protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Union


class AuthMethod(str, Enum):
    """--imap-auth / --smtp-auth."""

    NONE = "none"
    PASSWORD = "password"  # noqa: S105 - a method name, not a secret
    OAUTH2 = "oauth2"


class Mechanism(str, Enum):
    """--oauth2-mechanism: the SASL mechanism that carries the token."""

    AUTO = "auto"  # OAUTHBEARER where the server announces it, else XOAUTH2
    XOAUTH2 = "xoauth2"
    OAUTHBEARER = "oauthbearer"


class Provider(str, Enum):
    """--oauth2-provider: who issues the tokens, and so which flow fetches them."""

    MICROSOFT365 = "microsoft365"  # app-only client credentials (MSAL where installed)
    GOOGLE = "google"  # service account with domain-wide delegation, or a refresh token
    GENERIC = "generic"  # RFC 6749 client credentials or refresh token at --oauth2-token-url


@dataclass(frozen=True)
class SecretValue:
    """A resolved secret and the reference it came from (env:, file:, keyring:, or None for a
    literal), so a rotated refresh token can be written back where it was read."""

    value: str = field(repr=False)
    reference: Optional[str] = None


@dataclass(frozen=True)
class OAuth2Client:
    """The one OAuth2 client both legs share (--oauth2-*)."""

    provider: Provider
    client_id: Optional[str] = None
    client_secret: Optional[SecretValue] = field(default=None, repr=False)
    certificate: Optional[str] = None  # PEM file with the private key and certificate (Microsoft)
    service_account: Optional[SecretValue] = field(default=None, repr=False)  # Google key JSON
    tenant: Optional[str] = None  # Microsoft tenant id or domain
    token_url: Optional[str] = None  # generic: the token endpoint; others: an override (sovereign clouds, tests)
    scope: Optional[str] = None  # default: the provider's mail scope(s)


@dataclass(frozen=True)
class TokenSource:
    """Where one leg's access token comes from: an OAuth2 grant, or a command that prints one."""

    user: str  # the mailbox / login the token is for (Google delegation subject, cache key)
    client: Optional[OAuth2Client] = None
    refresh_token: Optional[SecretValue] = field(default=None, repr=False)  # refresh-token grant
    command: Optional[str] = None  # --imap-token-command / --smtp-token-command
    cache_key: str = ""  # sensor id + identity: which cache entry this leg's token lives in


@dataclass(frozen=True)
class NoAuth:
    """No login on this leg (--smtp-auth none)."""


@dataclass(frozen=True)
class PasswordAuth:
    """A user name and password (SASL PLAIN or LOGIN)."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class OAuth2Auth:
    """An OAuth2 login: the user, where its access token comes from, and how it is sent."""

    user: str
    source: TokenSource
    mechanism: Mechanism = Mechanism.AUTO
    allow_plain_loopback: bool = False  # --oauth2-allow-plain: tokens in clear to loopback only


Auth = Union[NoAuth, PasswordAuth, OAuth2Auth]


@dataclass(frozen=True)
class BearerLogin:
    """An OAuth2 login ready to send: what the token step makes of an OAuth2Auth."""

    user: str
    token: str = field(repr=False)
    mechanism: Mechanism = Mechanism.AUTO
    allow_plain_loopback: bool = False  # --oauth2-allow-plain: tokens in clear to loopback only


Login = Union[NoAuth, PasswordAuth, BearerLogin]
"""What a protocol's login step takes."""

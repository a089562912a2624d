"""The token step: a valid OAuth2 access token for one leg, from the cache or the provider.

    get_token(source, deadline, environ, refresh=False, transcript=None) -> AccessToken

Where the token comes from (auth.TokenSource):
- a token command (`source.command`, see command.py): run on every call, never cached;
- Provider.MICROSOFT365: app-only client credentials for https://outlook.office365.com/.default
  at https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token, with a client secret or a
  certificate (a JWT client assertion with x5t / x5t#S256). MSAL where installed
  (`pip install prtg-roundtrip[microsoft]`); without it a secret works with the standard library
  and a certificate with the `cryptography` package; with neither, an error names the extra.
  One app-only token serves both legs: it is cached without the user.
- Provider.GOOGLE: a service account key with domain-wide delegation (JWT bearer grant acting
  for the leg's user, scope https://mail.google.com/) via google-auth where installed (else
  `cryptography` signs), or a refresh token (client id/secret + refresh token, standard library)
  at https://oauth2.googleapis.com/token.
- Provider.GENERIC: RFC 6749 client credentials, or the refresh-token grant when
  `source.refresh_token` is set, at `client.token_url`; standard library only.
`client.token_url` overrides the provider's endpoint for every provider.

A refresh token the server rotates is stored back where it came from (rotation.py); when that
is not possible (env:, a literal) it is kept in the token cache and used from there while the
configured value stays unchanged, and the transcript says so.

Tokens are cached per key (cache.py) and fetched again when they expire within 5 minutes (10 %
of the lifetime for short-lived ones); a valid cached token costs no request. `refresh=True`
(the mail server refused the token) drops it and fetches a new one, unless another run already
replaced it in the cache. Every secret is registered for redaction (secrets.register) as soon
as it is known; the transcript notes where the token came from, never the token.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from ..auth import OAuth2Client, Provider, SecretValue, TokenSource
from ..deadline import Deadline
from ..errors import TokenError
from ..secrets import register
from ..transcript import Transcript
from .cache import TokenCache, usable

if TYPE_CHECKING:
    from .grants import Fetched

MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105
GOOGLE_SCOPE = "https://mail.google.com/"

__all__ = ["AccessToken", "get_token"]


@dataclass(frozen=True)
class AccessToken:
    """An access token in hand, and what getting it cost."""

    value: str = field(repr=False)
    expires_at: float  # Unix time (for a token command's token: the end of this run's budget)
    fetched: bool  # True if this call asked the identity provider (or ran the command)
    elapsed: float  # seconds spent getting it (0.0 when cached)


# The token this process last handed out per cache file: `refresh=True` replaces only that one.
_handed_out: Dict[str, str] = {}


def get_token(
    source: TokenSource,
    deadline: Deadline,
    environ: Mapping[str, str],
    *,
    refresh: bool = False,
    transcript: Optional[Transcript] = None,
    context: Optional[ssl.SSLContext] = None,
) -> AccessToken:
    """A valid access token for `source`: from the cache unless it expires within the margin or
    `refresh` (the mail server refused the cached one: drop it and fetch anew)."""
    _register_inputs(source)
    if source.command:
        from . import command

        token, elapsed = command.run(source.command, deadline, environ)
        _note(transcript, f"token: from the command {command.program_name(source.command)} in "
                          f"{elapsed * 1000:.0f} ms (not cached)")
        return AccessToken(token, time.time() + deadline.remaining(), True, elapsed)
    client = source.client
    if client is None:
        raise TokenError("this leg has neither an OAuth2 client nor a token command",
                         hint="Give --oauth2-provider and its options, or a token command")
    plan = _Plan(source, client)
    try:
        cache: Optional[TokenCache] = TokenCache(plan.key(), environ)
    except OSError as exc:
        cache = None
        _note(transcript, f"token cache not usable ({exc.strerror or exc}): fetching without it")
    if cache is None:
        return _fetch(plan, {}, None, deadline, context, transcript)
    if not refresh:
        entry = cache.read()
        if usable(entry):
            return _cached(entry, cache, transcript)
    with cache.locked(deadline):
        entry = cache.read()
        last = _handed_out.get(cache.path)
        if usable(entry) and (not refresh or (last is not None and entry.get("access_token") != last)):
            return _cached(entry, cache, transcript)  # another run fetched it meanwhile
        if refresh and entry.get("access_token"):
            # The refused token goes now, so that no later run uses it if this fetch fails.
            entry = {k: v for k, v in entry.items() if k in ("refresh_token", "refresh_source")}
            try:
                cache.write(entry)
            except OSError as exc:
                _note(transcript, f"token cache not writable ({exc.strerror or exc})")
        return _fetch(plan, entry, cache, deadline, context, transcript)


def _register_inputs(source: TokenSource) -> None:
    client = source.client
    register(
        source.refresh_token.value if source.refresh_token else None,
        client.client_secret.value if client and client.client_secret else None,
        client.service_account.value if client and client.service_account else None,
    )


def _note(transcript: Optional[Transcript], text: str) -> None:
    if transcript is not None:
        transcript.note("OAUTH2", text)


def _cached(entry: Mapping[str, Any], cache: TokenCache, transcript: Optional[Transcript]) -> AccessToken:
    token = str(entry["access_token"])
    register(token)
    expires_at = float(entry["expires_at"])
    _handed_out[cache.path] = token
    _note(transcript, f"token: cached (expires in {max(0.0, expires_at - time.time()) / 60:.0f} min)")
    return AccessToken(token, expires_at, False, 0.0)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _fetch(
    plan: _Plan, entry: Mapping[str, Any], cache: Optional[TokenCache], deadline: Deadline,
    context: Optional[ssl.SSLContext], transcript: Optional[Transcript],
) -> AccessToken:
    started = time.perf_counter()
    obtained_at = time.time()
    new_entry: Dict[str, Any] = {}
    configured = plan.source.refresh_token
    if configured is not None:
        # A rotated refresh token kept in the cache replaces the configured one while that
        # stays unchanged (an env: or literal value, or a file that could not be rewritten).
        origin = _digest(configured.value)
        kept = entry.get("refresh_token")
        use = kept if entry.get("refresh_source") == origin and isinstance(kept, str) and kept else configured.value
        register(use)
        fetched = plan.fetch(deadline, context, refresh_token=use)
        if fetched.refresh_token and fetched.refresh_token != use:
            from .rotation import store_back

            why = store_back(configured.reference, fetched.refresh_token)
            if why is None:
                _note(transcript, f"the server rotated the refresh token: written back to {configured.reference}")
            else:
                where = "kept in the token cache and used from there" if cache else "lost (no token cache)"
                _note(transcript, f"the server rotated the refresh token; {why}: it is {where}")
                new_entry.update(refresh_token=fetched.refresh_token, refresh_source=origin)
        elif use != configured.value:
            new_entry.update(refresh_token=use, refresh_source=origin)
    else:
        fetched = plan.fetch(deadline, context)
    elapsed = time.perf_counter() - started
    expires_at = obtained_at + fetched.expires_in
    new_entry.update(access_token=fetched.access_token, expires_at=expires_at, obtained_at=obtained_at,
                     host=fetched.host)
    if cache is not None:
        try:
            cache.write(new_entry)
        except OSError as exc:
            _note(transcript, f"token cache not writable ({exc.strerror or exc})")
        _handed_out[cache.path] = fetched.access_token
    _note(transcript, f"token: fetched from {fetched.host} in {elapsed * 1000:.0f} ms")
    return AccessToken(fetched.access_token, expires_at, True, elapsed)


class _Plan:
    """Which grant a source uses, where, for which scope; validated before any request."""

    def __init__(self, source: TokenSource, client: OAuth2Client):
        self.source = source
        self.client = client
        provider = client.provider
        self.grant = "refresh_token" if source.refresh_token else "client_credentials"
        if provider is Provider.MICROSOFT365:
            self.scope: Optional[str] = client.scope or MICROSOFT_SCOPE
            if not client.token_url and not client.tenant:
                raise TokenError("Microsoft 365 needs the tenant", hint="Give --oauth2-tenant (its id or domain)")
            self.url = client.token_url or MICROSOFT_TOKEN_URL.format(tenant=client.tenant)
            _require(client.client_id, "Microsoft 365 needs the application (client) id", "--oauth2-client-id")
            if not source.refresh_token and not client.client_secret and not client.certificate:
                raise TokenError("Microsoft 365 needs a client secret or a certificate",
                                 hint="Give --oauth2-client-secret or --oauth2-certificate")
        elif provider is Provider.GOOGLE:
            self.scope = client.scope or GOOGLE_SCOPE
            self.info: Dict[str, Any] = {}
            if client.service_account and not source.refresh_token:
                self.grant = "service_account"
                self.info = _service_account_info(client.service_account)
                default = self.info.get("token_uri") if isinstance(self.info.get("token_uri"), str) else None
                self.url = client.token_url or default or GOOGLE_TOKEN_URL
            elif source.refresh_token:
                self.url = client.token_url or GOOGLE_TOKEN_URL
                _require(client.client_id, "a Google refresh token needs the OAuth client id", "--oauth2-client-id")
            else:
                raise TokenError("Google needs a service account key or a refresh token",
                                 hint="Give the service account key, or a refresh token for the leg")
        else:
            self.scope = client.scope
            if not client.token_url:
                raise TokenError("the generic provider needs the token endpoint", hint="Give --oauth2-token-url")
            self.url = client.token_url
            if not source.refresh_token:
                _require(client.client_id, "client credentials need the client id", "--oauth2-client-id")
                if not client.client_secret:
                    raise TokenError("client credentials need the client secret", hint="Give --oauth2-client-secret")

    def key(self) -> str:
        """The cache key: per sensor and identity (`source.cache_key`, see auth_settings). App-only
        tokens (client credentials, Microsoft 365 or generic) are the app's, not a user's: the
        key leaves the user out, so both legs of a sensor share one token."""
        client = self.client
        app_only = client.provider is not Provider.GOOGLE and self.grant == "client_credentials"
        parts: Tuple[Optional[str], ...] = (self.source.cache_key, client.provider.value, self.grant, client.tenant,
                                            client.client_id, self.url, self.scope,
                                            None if app_only else self.source.user)
        return "\x1f".join(p or "" for p in parts)

    def fetch(self, deadline: Deadline, context: Optional[ssl.SSLContext], refresh_token: Optional[str] = None
              ) -> Fetched:
        # Imported here: a run with a cached token needs none of the HTTP, signing or library code
        # (and a generic or refresh-token fetch none of the libraries').
        from . import grants

        client = self.client
        provider = client.provider
        secret = client.client_secret.value if client.client_secret else None
        if refresh_token is not None:
            scope = client.scope if provider is not Provider.MICROSOFT365 else self.scope
            return grants.refresh_token_grant(self.url, refresh_token, provider, deadline, client_id=client.client_id,
                                              secret=secret, scope=scope, context=context)
        if provider is Provider.MICROSOFT365:
            return self._microsoft(deadline, context, secret)
        if provider is Provider.GOOGLE:
            from . import libraries

            if libraries.google_auth_available():
                return libraries.google_service_account(self.info, subject=self.source.user, scope=str(self.scope),
                                                        token_url=self.url, deadline=deadline, context=context)
            _need_cryptography("a Google service account key", "google")
            assertion = grants.google_assertion(self.info, self.source.user, str(self.scope), self.url)
            return grants.jwt_bearer_grant(self.url, assertion, provider, deadline, context)
        return grants.client_credentials(self.url, str(client.client_id), provider, deadline, secret=secret,
                                         scope=self.scope, context=context)

    def _microsoft(self, deadline: Deadline, context: Optional[ssl.SSLContext], secret: Optional[str]
                   ) -> Fetched:
        from . import grants, libraries

        client = self.client
        tenant = client.tenant or "organizations"
        # MSAL takes https:// endpoints only: a loopback http:// test service gets the standard library.
        use_msal = self.url.lower().startswith("https://") and libraries.msal_available()
        if client.certificate:
            if use_msal:
                key, cert = grants.split_pem(_read_text(client.certificate), client.certificate)
                return libraries.msal_client_credentials(
                    tenant=tenant, client_id=str(client.client_id), token_url=self.url, scope=str(self.scope),
                    deadline=deadline, private_key=key, certificate=cert, context=context)
            _need_cryptography("a certificate credential", "microsoft")
            certificate = grants.read_certificate(client.certificate)
            assertion = grants.microsoft_assertion(certificate, str(client.client_id), self.url)
            return grants.client_credentials(self.url, str(client.client_id), Provider.MICROSOFT365, deadline,
                                             assertion=assertion, scope=self.scope, context=context)
        if use_msal:
            return libraries.msal_client_credentials(
                tenant=tenant, client_id=str(client.client_id), token_url=self.url, scope=str(self.scope),
                deadline=deadline, secret=secret, context=context)
        return grants.client_credentials(self.url, str(client.client_id), Provider.MICROSOFT365, deadline,
                                         secret=secret, scope=self.scope, context=context)


def _require(value: Optional[str], cause: str, option: str) -> None:
    if not value:
        raise TokenError(cause, hint=f"Give {option}")


def _need_cryptography(what: str, extra: str) -> None:
    from . import grants

    if not grants.have_cryptography():
        raise TokenError(
            f"{what} needs a signing library, and neither {'MSAL' if extra == 'microsoft' else 'google-auth'} "
            "nor cryptography is installed",
            hint=f"pip install prtg-roundtrip[{extra}]",
        )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read(1 << 20)
    except OSError as exc:
        raise TokenError(f"the file {path} cannot be read ({exc.strerror})",
                         hint="Give a file the probe's account may read (and nobody else)") from None


def _service_account_info(secret: SecretValue) -> Dict[str, Any]:
    """The key JSON. A `file:` reference is read whole here (secrets.resolve keeps only the first line)."""
    text = secret.value
    if secret.reference and secret.reference.startswith("file:"):
        text = _read_text(secret.reference[len("file:"):])
    register(text)
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict) or not info.get("private_key") or not info.get("client_email"):
        raise TokenError("the service account key is not a key JSON with private_key and client_email",
                         hint="Give the key file as downloaded from the Google Cloud console (file:PATH)")
    register(str(info["private_key"]))
    return info

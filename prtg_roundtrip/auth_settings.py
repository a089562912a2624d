"""Parameters -> each leg's typed Auth (auth.py), validated before any connection is made.

`--imap-auth password|oauth2`, `--smtp-auth none|password|oauth2`. A password leg takes
`--LEG-user` / `--LEG-password` (or `--LEG-credentials`); an OAuth2 leg takes `--LEG-user` and a
token source: `--LEG-token-command`, or the one OAuth2 client both legs share
(`--oauth2-provider` and its `--oauth2-*` options) with, where the grant needs one, the leg's
`--LEG-refresh-token`. Every secret is resolved (and so registered for redaction) here.
"""

from __future__ import annotations

import os.path
import urllib.parse
from dataclasses import replace
from typing import Mapping, Optional

from .auth import (
    Auth,
    AuthMethod,
    Mechanism,
    NoAuth,
    OAuth2Auth,
    OAuth2Client,
    PasswordAuth,
    Provider,
    SecretValue,
    TokenSource,
)
from .errors import ParameterError
from .secrets import device_credentials, resolve, secret_value
from .settings import require

LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    import ipaddress  # (only OAuth2 settings ask)

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def oauth2_client(v: Mapping[str, object], environ: Mapping[str, str]) -> Optional[OAuth2Client]:
    """The shared OAuth2 client of --oauth2-provider and its options, or None."""
    provider_name = _str(v.get("oauth2_provider"))
    if not provider_name:
        for option in ("tenant", "client_id", "client_secret", "certificate", "service_account", "token_url"):
            if v.get(f"oauth2_{option}"):
                raise ParameterError(
                    f"--oauth2-{option.replace('_', '-')} is given without --oauth2-provider",
                    hint="Choose --oauth2-provider microsoft365, google or generic",
                )
        return None
    provider = Provider(provider_name)
    client_id = _clean(v, "oauth2_client_id")
    secret = secret_value(_str(v.get("oauth2_client_secret")), "--oauth2-client-secret", environ)
    certificate = _clean(v, "oauth2_certificate")
    service_account = _service_account(_str(v.get("oauth2_service_account")), environ)
    tenant = _clean(v, "oauth2_tenant")
    token_url = _token_url(_clean(v, "oauth2_token_url"))
    scope = _clean(v, "oauth2_scope")
    if certificate and not os.path.isfile(certificate):
        raise ParameterError(f"--oauth2-certificate {certificate!r} does not exist",
                             hint="Give the PEM file with the app's private key and certificate")
    if provider is Provider.MICROSOFT365:
        _need(tenant, "--oauth2-tenant", "the directory (tenant) id or domain of the Microsoft 365 tenant")
        _need(client_id, "--oauth2-client-id", "the application (client) id of the app registration")
        if bool(secret) == bool(certificate):
            raise ParameterError(
                "Microsoft 365 needs exactly one of --oauth2-client-secret and --oauth2-certificate",
                hint="Microsoft recommends a certificate; see the README's Microsoft 365 set-up",
            )
    elif provider is Provider.GOOGLE:
        if not service_account and not client_id:
            raise ParameterError(
                "Google needs --oauth2-service-account (domain-wide delegation) or --oauth2-client-id "
                "with --oauth2-client-secret and a --imap-refresh-token / --smtp-refresh-token",
                hint="See the README's Google Workspace set-up",
            )
    else:
        _need(token_url, "--oauth2-token-url", "the token endpoint of the identity provider")
        _need(client_id, "--oauth2-client-id", "the OAuth2 client id")
    return OAuth2Client(provider, client_id, secret, certificate, service_account, tenant, token_url, scope)


def leg_auth(v: Mapping[str, object], leg: str, environ: Mapping[str, str], client: Optional[OAuth2Client],
             host: str) -> Auth:
    """The Auth of one leg ("imap" or "smtp")."""
    label = leg.upper()
    method = AuthMethod(_str(v.get(f"{leg}_auth")) or (AuthMethod.PASSWORD.value if leg == "imap" else "none"))
    if method is AuthMethod.NONE:
        if leg == "imap":
            raise ParameterError("--imap-auth none is not possible", hint="IMAP always logs in: password or oauth2")
        return NoAuth()
    user = _str(v.get(f"{leg}_user"))
    if method is AuthMethod.PASSWORD:
        password = _str(v.get(f"{leg}_password"))
        kind = v.get(f"{leg}_credentials")
        if kind:
            device_user, device_password = device_credentials(str(kind), environ, f"--{leg}-credentials")
            user, password = user or device_user, password or device_password
        user = require(user, f"--{leg}-user", f"{label} authentication needs a user name (or --{leg}-credentials)")
        password = require(resolve(password, f"--{leg}-password", environ), f"--{leg}-password",
                            f"{label} authentication needs a password (or --{leg}-credentials)")
        return PasswordAuth(user, password)
    user = require(user, f"--{leg}-user", f"OAuth2 needs the mailbox's login name in --{leg}-user")
    command = _clean(v, f"{leg}_token_command")
    refresh = secret_value(_str(v.get(f"{leg}_refresh_token")), f"--{leg}-refresh-token", environ)
    if command and (client or refresh):
        raise ParameterError(
            f"--{leg}-token-command and --oauth2-provider/--{leg}-refresh-token exclude each other",
            hint=f"Either a command prints the {label} token, or the sensor fetches it",
        )
    if not command and client is None:
        raise ParameterError(
            f"--{leg}-auth oauth2 needs a token source",
            hint=f"Give --oauth2-provider (with its --oauth2-* options) or --{leg}-token-command",
        )
    if client is not None:
        _check_grant(client, refresh, leg)
    allow_plain = bool(v.get("oauth2_allow_plain"))
    if allow_plain and not is_loopback(host):
        raise ParameterError(
            f"--oauth2-allow-plain only allows plain-text tokens to a loopback server, not {host!r}",
            hint="Use TLS for every real server",
        )
    mechanism = Mechanism(_str(v.get("oauth2_mechanism")) or Mechanism.AUTO.value)
    source = TokenSource(user=user, client=client, refresh_token=refresh, command=command)
    return OAuth2Auth(user, source, mechanism, allow_plain)


def with_cache_key(auth: Auth, sensor: str) -> Auth:
    """An OAuth2 leg's token source keyed by sensor; oauth2/ adds the identity (client, scope, and
    the user unless the token is the app's own)."""
    if not isinstance(auth, OAuth2Auth):
        return auth
    return replace(auth, source=replace(auth.source, cache_key=sensor))


def _check_grant(client: OAuth2Client, refresh: Optional[SecretValue], leg: str) -> None:
    if client.provider is Provider.MICROSOFT365 and refresh:
        raise ParameterError(
            f"--{leg}-refresh-token is not used with --oauth2-provider microsoft365",
            hint="Microsoft 365 uses the app-only client-credentials flow (IMAP.AccessAsApp, SMTP.SendAsApp)",
        )
    if client.provider is Provider.GOOGLE and not client.service_account:
        if not refresh:
            raise ParameterError(
                f"Google without a service account needs --{leg}-refresh-token",
                hint="Give --oauth2-service-account for domain-wide delegation, or a refresh token for the user",
            )
        _need(client.client_secret, "--oauth2-client-secret", "the OAuth client's secret (refresh-token grant)")


def _service_account(value: Optional[str], environ: Mapping[str, str]) -> Optional[SecretValue]:
    """A Google service-account key: a JSON file's path, or a secret reference holding the JSON."""
    if not value:
        return None
    if value.startswith(("env:", "file:", "keyring:", "literal:")):
        return secret_value(value, "--oauth2-service-account", environ)
    return secret_value("file:" + value, "--oauth2-service-account", environ, whole_file=True)


def _token_url(url: Optional[str]) -> Optional[str]:
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ParameterError(f"--oauth2-token-url {url!r} is not an http(s) URL",
                             hint="Give the token endpoint, e.g. https://idp.example.com/oauth2/token")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ParameterError(
            f"--oauth2-token-url {url!r} is not HTTPS",
            hint="Client secrets and tokens only travel over HTTPS (plain http only to a loopback address)",
        )
    return url


def _need(value: object, option: str, what: str) -> None:
    if not value:
        raise ParameterError(f"{option} is missing", hint=f"Give {what}")


def _clean(v: Mapping[str, object], key: str) -> Optional[str]:
    value = _str(v.get(key))
    if value is None or not value.strip():
        return None
    if any(ch in value for ch in "\r\n\0"):
        raise ParameterError(f"--{key.replace('_', '-')} contains a line break or NUL", hint="Check the value")
    return value.strip()


def _str(value: object) -> Optional[str]:
    return None if value is None else str(value)

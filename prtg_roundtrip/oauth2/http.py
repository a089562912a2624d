"""The token endpoint over HTTP(S), inside the run's budget, and what its answers mean.

The standard library only (http.client): one POST per grant, connect and read bounded by
`deadline.cap(...)` and the socket guarded by the deadline's watchdog, so a hanging or
trickling endpoint ends as "no answer within N s" before PRTG's timeout. Certificates are
verified (the caller may pass its own `ssl.SSLContext`: --ca-file, --insecure); plain
`http://` is refused except for loopback hosts (local test token services).

No proxy support: the token endpoint is connected directly.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from typing import Any, Dict, Mapping, NamedTuple, Optional

from ..auth import Provider
from ..auth_settings import is_loopback
from ..deadline import Deadline
from ..errors import TokenError
from ..secrets import registered
from ..tls import describe_network_error
from ..transcript import redact

# The longest a token request may take when the budget allows more.
TOKEN_TIMEOUT = 30.0
# Bigger answers are not token answers.
MAX_ANSWER = 1 << 20


class Answer(NamedTuple):
    """An HTTP answer (a NamedTuple: cheaper to define than a frozen dataclass)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    host: str
    elapsed: float

    def __repr__(self) -> str:  # never the body (it holds the tokens)
        return f"Answer(status={self.status!r}, host={self.host!r}, elapsed={self.elapsed!r})"


def host_of(url: str) -> str:
    """The host part of a URL, for messages (never a query string or user info)."""
    try:
        return urllib.parse.urlsplit(url).hostname or url
    except ValueError:
        return "the token endpoint"


def _default_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def request(
    method: str,
    url: str,
    deadline: Deadline,
    *,
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    context: Optional[ssl.SSLContext] = None,
    timeout: float = TOKEN_TIMEOUT,
) -> Answer:
    """One HTTP exchange with the identity provider; TokenError for anything but an answer."""
    import http.client  # here: a run with a cached token makes no request
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise TokenError("the token URL is not a valid URL", hint="Check --oauth2-token-url") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise TokenError(
            f"the token URL must be an https:// URL (got '{scheme}:')", hint="Check --oauth2-token-url"
        )
    if scheme == "http" and not is_loopback(host):
        raise TokenError(
            f"the token URL for {host} is plain http://: secrets are sent to the token endpoint only over TLS",
            server=host,
            hint="Use its https:// URL (plain http:// is accepted for loopback test services only)",
        )
    if deadline.remaining() <= 0:
        raise TokenError(
            "the run's --timeout budget was used up before the token request", server=host,
            hint="Raise PRTG's timeout together with --timeout",
        )
    wait = deadline.cap(timeout)
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=wait, context=context or _default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=wait)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # One request per connection, said so: a server that keeps the connection open may hold its
    # answer behind Nagle's algorithm until our delayed ACK (measured: 44 ms instead of 3 ms
    # against Python's http.server over TLS).
    sent = {"Accept": "application/json", "User-Agent": "prtg-roundtrip", "Connection": "close", **(headers or {})}
    started = time.perf_counter()
    try:
        conn.connect()
        if conn.sock is not None:
            deadline.guard(conn.sock)
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read(MAX_ANSWER + 1)
        status = response.status
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        if deadline.fired:
            cause, hint = deadline.ran_out("the token request")
            raise TokenError(cause, server=host, hint=hint) from None
        if isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError):
            raise TokenError(
                f"the token endpoint did not answer in HTTP ({type(exc).__name__})", server=host,
                hint="Check the token URL",
            ) from None
        cause, _ = describe_network_error(exc, wait)
        hint = "Check that the token service runs and that this host may reach it (firewall, proxy)"
        if isinstance(exc, ssl.SSLError):
            hint = "Check the certificate of the token endpoint and the system's trusted CAs (--ca-file)"
        raise TokenError(cause, server=host, hint=hint) from None
    finally:
        conn.close()
    return Answer(status, answer_headers, data, host, time.perf_counter() - started)


def post_form(
    url: str,
    fields: Mapping[str, str],
    deadline: Deadline,
    *,
    headers: Optional[Mapping[str, str]] = None,
    context: Optional[ssl.SSLContext] = None,
) -> Answer:
    body = urllib.parse.urlencode(fields).encode("ascii")
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return request("POST", url, deadline, body=body, headers=sent, context=context)


def parse_json(answer: Answer) -> Optional[Dict[str, Any]]:
    """The JSON object of an answer, or None."""
    if len(answer.body) > MAX_ANSWER:
        return None
    try:
        data = json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_transport(answer: Answer, provider: Provider) -> Dict[str, Any]:
    """The JSON object of a token endpoint answer; TokenError for 5xx and anything not JSON.

    4xx answers with an OAuth2 error object are returned for `raise_for_error` (the libraries
    read them themselves).
    """
    data = parse_json(answer)
    if data is not None and data.get("error") == "temporarily_unavailable":
        raise rejection(provider, answer.host, data, answer.status)
    if answer.status >= 500 or answer.status == 429:
        detail = f" ({describe_error(data)})" if data and data.get("error") else ""
        raise TokenError(
            f"the identity provider is unavailable (HTTP {answer.status}{detail})",
            server=answer.host,
            hint="A fault or maintenance on its side: the next scan tries again; check the provider's status page",
        )
    if data is None:
        kind = answer.headers.get("content-type", "unknown type").split(";")[0]
        raise TokenError(
            f"the token endpoint answered HTTP {answer.status} with {kind}, not an OAuth2 JSON answer",
            server=answer.host,
            hint="Check the token URL (a proxy or login page may answer in its place)",
        )
    return data


def describe_error(data: Mapping[str, Any]) -> str:
    """'error: first line of error_description', redacted and shortened."""
    error = str(data.get("error") or "error")
    description = str(data.get("error_description") or "").strip()
    description = description.splitlines()[0] if description else ""
    text = f"{error}: {description}" if description else error
    text = redact(text, registered())
    return text if len(text) <= 300 else text[:297] + "..."


_HINTS = {
    ("invalid_client", Provider.MICROSOFT365): (
        "Check --oauth2-client-secret (give the secret's value, not its id; it may have expired: Entra admin "
        "center > App registrations > Certificates & secrets) or that the certificate is uploaded there, "
        "and --oauth2-client-id and --oauth2-tenant"
    ),
    ("invalid_client", Provider.GOOGLE): (
        "Check the service account key (it may have been deleted or disabled) or the OAuth client id and secret"
    ),
    ("invalid_client", Provider.GENERIC): "Check --oauth2-client-id and --oauth2-client-secret",
    ("unauthorized_client", Provider.MICROSOFT365): (
        "The app may not use this grant: check the app registration and that admin consent was given"
    ),
    ("unauthorized_client", Provider.GOOGLE): (
        "Domain-wide delegation is missing: in the Google Admin console add the service account's client id "
        "under Security > API controls > Domain-wide delegation with the scope https://mail.google.com/"
    ),
    ("unauthorized_client", Provider.GENERIC): "The client may not use this grant: check its registration",
    ("invalid_grant", Provider.MICROSOFT365): (
        "Check the certificate or secret and the tenant; a client assertion also fails when the probe's clock is off"
    ),
    ("invalid_grant", Provider.GOOGLE): (
        "A refresh token expired or was revoked: issue a new one (consent again) and store it where the option "
        "points; for a service account check the user it acts for, the key, and the probe's clock"
    ),
    ("invalid_grant", Provider.GENERIC): (
        "The refresh token expired or was revoked: issue a new one (consent again) and store it where "
        "--imap-refresh-token / --smtp-refresh-token points"
    ),
    ("invalid_scope", Provider.MICROSOFT365): (
        "App-only tokens for IMAP and SMTP use the scope https://outlook.office365.com/.default "
        "(leave --oauth2-scope unset)"
    ),
    ("invalid_scope", Provider.GOOGLE): (
        "Mail needs the scope https://mail.google.com/, also in the domain-wide delegation entry"
    ),
    ("invalid_scope", Provider.GENERIC): "Check --oauth2-scope against what the client may request",
}

_CAUSES = {
    "invalid_client": "the identity provider rejected the client",
    "unauthorized_client": "the identity provider does not allow this client this grant",
    "invalid_grant": "the identity provider rejected the grant (refresh token or assertion expired, revoked or wrong)",
    "invalid_scope": "the identity provider refused the scope",
    "invalid_request": "the identity provider refused the request as malformed",
    "unsupported_grant_type": "the identity provider does not support this grant type",
    "access_denied": "the identity provider denied access",
    "temporarily_unavailable": "the identity provider is temporarily unavailable",
}


def rejection(provider: Provider, host: str, data: Mapping[str, Any], status: Optional[int] = None) -> TokenError:
    """The TokenError for an OAuth2 error answer (RFC 6749 section 5.2)."""
    error = str(data.get("error") or "")
    cause = _CAUSES.get(error, "the identity provider refused the token request")
    if not error and status:
        cause += f" (HTTP {status})"
    else:
        cause += f" ({describe_error(data)})"
    hint = _HINTS.get((error, provider))
    if error == "temporarily_unavailable":
        hint = "A fault or maintenance on its side: the next scan tries again"
    return TokenError(cause, server=host, hint=hint or "See the provider's description of the error")


def token_fields(data: Mapping[str, Any], host: str) -> Dict[str, Any]:
    """access_token, expires_in and (if any) refresh_token of a successful answer."""
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenError(
            "the token endpoint's answer has no access_token", server=host,
            hint="Check the token URL and the grant; run with --verbose",
        )
    return dict(data)

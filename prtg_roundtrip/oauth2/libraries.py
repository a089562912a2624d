"""The providers' own libraries, where installed: MSAL (Microsoft) and google-auth (Google).

Both are given this package's HTTP layer (http.request) instead of their own, so every request
stays inside the run's budget, uses the run's TLS policy and the token URL override, and its
failures read like every other token failure:
- MSAL: `http_client=` (an object with MSAL's get/post); MSAL's tenant discovery
  (`.../v2.0/.well-known/openid-configuration`) is answered here, naming the token endpoint, so a
  run makes one request, and a `--oauth2-token-url` override (sovereign clouds, tests) is used.
- google-auth: a `google.auth.transport.Request` callable; the key JSON's `token_uri` is
  replaced by the token URL override, which is also the assertion's audience.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
import warnings
from typing import Any, Dict, Mapping, Optional

from ..auth import Provider
from ..deadline import Deadline
from ..errors import TokenError
from ..secrets import registered
from ..transcript import redact
from .grants import Fetched, fetched_from
from .http import check_transport, host_of, rejection, request


def msal_available() -> bool:
    try:
        import msal  # noqa: F401
    except ImportError:
        return False
    return True


def google_auth_available() -> bool:
    try:
        with warnings.catch_warnings():
            # google-auth warns on import under Python 3.9 (end of life); the sensor's output is its document.
            warnings.simplefilter("ignore", FutureWarning)
            import google.oauth2.service_account  # noqa: F401
    except ImportError:
        return False
    return True


class _MsalResponse:
    def __init__(self, status: int, text: str, headers: Mapping[str, str]):
        self.status_code = status
        self.text = text
        self.headers = dict(headers)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise TokenError(f"the identity provider answered HTTP {self.status_code}")


class MsalHttp:
    """MSAL's http_client, on this package's HTTP layer."""

    def __init__(self, token_url: str, authority: str, deadline: Deadline, context: Optional[ssl.SSLContext]):
        self.token_url = token_url
        self.authority = authority.rstrip("/")
        self.deadline = deadline
        self.context = context
        self.requests = 0

    def get(self, url: str, params: Optional[Mapping[str, str]] = None, headers: Optional[Mapping[str, str]] = None,
            **kwargs: Any) -> _MsalResponse:
        if url.endswith("/.well-known/openid-configuration"):
            config = {
                "token_endpoint": self.token_url,
                "authorization_endpoint": self.authority + "/oauth2/v2.0/authorize",
                "issuer": self.authority + "/v2.0",
            }
            return _MsalResponse(200, json.dumps(config), {"content-type": "application/json"})
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        return self._send("GET", url, None, headers)

    def post(self, url: str, params: Optional[Mapping[str, str]] = None, data: Any = None,
             headers: Optional[Mapping[str, str]] = None, **kwargs: Any) -> _MsalResponse:
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        body = urllib.parse.urlencode(data).encode("ascii") if isinstance(data, dict) else data
        if isinstance(body, str):
            body = body.encode("utf-8")
        sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self._send("POST", url, body, sent)

    def _send(
        self, method: str, url: str, body: Optional[bytes], headers: Optional[Mapping[str, str]]
    ) -> _MsalResponse:
        self.requests += 1
        answer = request(method, url, self.deadline, body=body, headers=dict(headers or {}), context=self.context)
        check_transport(answer, Provider.MICROSOFT365)  # 5xx, not JSON: TokenError here
        return _MsalResponse(answer.status, answer.body.decode("utf-8"), answer.headers)

    def close(self) -> None:
        pass


def msal_client_credentials(
    *, tenant: str, client_id: str, token_url: str, scope: str, deadline: Deadline,
    secret: Optional[str] = None, private_key: Optional[str] = None, certificate: Optional[str] = None,
    context: Optional[ssl.SSLContext] = None,
) -> Fetched:
    """App-only token via MSAL's ConfidentialClientApplication.acquire_token_for_client."""
    import msal

    authority = f"https://login.microsoftonline.com/{tenant}"
    credential: Any = secret
    if private_key is not None:
        # MSAL (1.35+) computes the SHA-256 thumbprint (x5t#S256) from the certificate itself.
        credential = {"private_key": private_key, "public_certificate": certificate}
    http = MsalHttp(token_url, authority, deadline, context)
    try:
        app = msal.ConfidentialClientApplication(
            client_id, client_credential=credential, authority=authority, http_client=http,
            instance_discovery=False, token_cache=msal.TokenCache(),
        )
        result = app.acquire_token_for_client(scopes=[scope])
    except TokenError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise TokenError(
            f"MSAL could not build the request ({redact(str(exc), registered())[:200]})",
            server=host_of(token_url), hint="Check --oauth2-certificate (PEM with key and certificate) or the secret",
        ) from None
    host = host_of(token_url)
    if not isinstance(result, dict):
        raise TokenError("MSAL returned no answer", server=host)
    if "error" in result:
        raise rejection(Provider.MICROSOFT365, host, result)
    return fetched_from(result, host)


class _GoogleResponse:
    def __init__(self, status: int, headers: Mapping[str, str], data: bytes):
        self.status = status
        self.headers = headers
        self.data = data


class GoogleRequest:
    """A google.auth.transport.Request on this package's HTTP layer."""

    def __init__(self, deadline: Deadline, context: Optional[ssl.SSLContext]):
        self.deadline = deadline
        self.context = context
        self.requests = 0

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Optional[Mapping[str, str]] = None,
                 timeout: Optional[float] = None, **kwargs: Any) -> _GoogleResponse:
        self.requests += 1
        if isinstance(body, str):
            body = body.encode("utf-8")
        answer = request(method, url, self.deadline, body=body, headers=dict(headers or {}), context=self.context)
        check_transport(answer, Provider.GOOGLE)
        return _GoogleResponse(answer.status, answer.headers, answer.body)


def google_service_account(
    info: Dict[str, Any], *, subject: str, scope: str, token_url: str, deadline: Deadline,
    context: Optional[ssl.SSLContext] = None,
) -> Fetched:
    """A token for `subject` with the service account's domain-wide delegation, via google-auth."""
    from google.auth import exceptions
    from google.oauth2 import service_account

    host = host_of(token_url)
    try:
        credentials = service_account.Credentials.from_service_account_info(
            {**info, "token_uri": token_url}, scopes=[scope], subject=subject,
            # google-auth always names Google's endpoint as the audience; an overridden token URL
            # (another deployment, the test service) is the audience instead.
            additional_claims={"aud": token_url},
        )
    except (ValueError, KeyError) as exc:
        raise TokenError(
            f"the service account key cannot be used ({redact(str(exc), registered())[:200]})",
            hint="Give the key JSON as downloaded from the Google Cloud console",
        ) from None
    try:
        credentials.refresh(GoogleRequest(deadline, context))
    except exceptions.RefreshError as exc:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        if data:
            raise rejection(Provider.GOOGLE, host, data) from None
        detail = redact(str(exc.args[0] if exc.args else exc), registered())[:200]
        raise TokenError(
            f"the identity provider refused the token request ({detail})",
            server=host, hint="See the provider's description of the error",
        ) from None
    token = credentials.token
    expiry = credentials.expiry
    data = {"access_token": token}
    if expiry is not None:
        import datetime

        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        data["expires_in"] = str(max(0.0, (expiry.replace(tzinfo=None) - now).total_seconds()))
    return fetched_from(data, host)

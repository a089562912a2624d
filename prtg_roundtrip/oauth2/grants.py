"""The OAuth2 grants the sensor uses, with the standard library (and `cryptography` to sign).

- client credentials (RFC 6749 4.4) with a client secret, or with a signed JWT client assertion
  (RFC 7523 2.2; Microsoft's certificate credential: x5t and x5t#S256 thumbprints in the header)
- refresh token (RFC 6749 6)
- JWT bearer (RFC 7523 2.1; Google's service account with domain-wide delegation)

Client credentials go in the form body (client_secret_post), which Microsoft, Google and common
identity providers accept. Every secret is registered for redaction as soon as it is known.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from ..auth import Provider
from ..deadline import Deadline
from ..errors import TokenError
from ..secrets import register
from .http import check_transport, post_form, rejection

# Assumed when an answer has no expires_in (RFC 6749 makes it RECOMMENDED, not required).
DEFAULT_LIFETIME = 3600.0
ASSERTION_LIFETIME = 600  # seconds a client assertion is valid
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Fetched(NamedTuple):
    """A token endpoint's successful answer. (A NamedTuple, not a dataclass: a fetching run
    imports this module, and a frozen dataclass costs about 1 ms to define.)"""

    access_token: str
    expires_in: float
    host: str
    refresh_token: Optional[str] = None

    def __repr__(self) -> str:  # never the tokens
        return f"Fetched(expires_in={self.expires_in!r}, host={self.host!r})"


def fetched_from(data: Mapping[str, Any], host: str) -> Fetched:
    token = data.get("access_token")
    refresh = data.get("refresh_token")
    register(token if isinstance(token, str) else None, refresh if isinstance(refresh, str) else None)
    if not isinstance(token, str) or not token.strip():
        raise TokenError(
            "the token endpoint's answer has no access_token", server=host,
            hint="Check the token URL and the grant",
        )
    try:
        expires_in = float(data.get("expires_in", DEFAULT_LIFETIME))
    except (TypeError, ValueError):
        expires_in = DEFAULT_LIFETIME
    return Fetched(token.strip(), max(0.0, expires_in), host, refresh if isinstance(refresh, str) and refresh else None)


def exchange(
    url: str,
    fields: Mapping[str, str],
    provider: Provider,
    deadline: Deadline,
    context: Optional[ssl.SSLContext] = None,
) -> Fetched:
    """POST a grant, and the token or the TokenError its answer means."""
    answer = post_form(url, fields, deadline, context=context)
    data = check_transport(answer, provider)
    if data.get("error") or answer.status >= 400:
        raise rejection(provider, answer.host, data, answer.status)
    return fetched_from(data, answer.host)


def client_credentials(
    url: str, client_id: str, provider: Provider, deadline: Deadline, *,
    secret: Optional[str] = None, assertion: Optional[str] = None, scope: Optional[str] = None,
    context: Optional[ssl.SSLContext] = None,
) -> Fetched:
    fields = {"grant_type": "client_credentials", "client_id": client_id}
    if secret:
        fields["client_secret"] = secret
    if assertion:
        fields["client_assertion_type"] = CLIENT_ASSERTION
        fields["client_assertion"] = assertion
    if scope:
        fields["scope"] = scope
    return exchange(url, fields, provider, deadline, context)


def refresh_token_grant(
    url: str, refresh_token: str, provider: Provider, deadline: Deadline, *,
    client_id: Optional[str] = None, secret: Optional[str] = None, scope: Optional[str] = None,
    context: Optional[ssl.SSLContext] = None,
) -> Fetched:
    fields = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if client_id:
        fields["client_id"] = client_id
    if secret:
        fields["client_secret"] = secret
    if scope:
        fields["scope"] = scope
    return exchange(url, fields, provider, deadline, context)


def jwt_bearer_grant(
    url: str, assertion: str, provider: Provider, deadline: Deadline, context: Optional[ssl.SSLContext] = None
) -> Fetched:
    return exchange(url, {"grant_type": JWT_BEARER, "assertion": assertion}, provider, deadline, context)


# --- signing (needs the `cryptography` package: an extra, or there with MSAL / google-auth) ---


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def have_cryptography() -> bool:
    try:
        import cryptography.hazmat.primitives.asymmetric.padding  # noqa: F401
    except ImportError:
        return False
    return True


def sign_rs256(header: Mapping[str, Any], claims: Mapping[str, Any], private_key_pem: str) -> str:
    """A compact JWS (RS256) of `claims`; registered as a secret."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError) as exc:
        raise TokenError(
            f"the private key cannot be used ({type(exc).__name__}: it is not an unencrypted PEM private key)",
            hint="Give the key in PEM without a passphrase",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TokenError("the private key is not an RSA key", hint="Use an RSA key (2048 bits or more)")
    signing_input = (
        _b64url(json.dumps(dict(header), separators=(",", ":")).encode("utf-8"))
        + "."
        + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode("utf-8"))
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    token = signing_input + "." + _b64url(signature)
    register(token)
    return token


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s.*?-----END \1-----", re.S)


class Certificate(NamedTuple):
    """A PEM file's private key and (first) certificate, with the certificate's thumbprints."""

    private_key: str
    certificate: str
    sha1: bytes
    sha256: bytes

    def __repr__(self) -> str:  # never the key
        return f"Certificate(sha1={self.sha1.hex()})"


def split_pem(text: str, path: str) -> Tuple[str, str]:
    """(private key PEM, certificate PEM) of a file that holds both."""
    key = cert = ""
    for match in _PEM_BLOCK.finditer(text):
        kind = match.group(1)
        if kind.endswith("PRIVATE KEY") and not key:
            key = match.group(0)
        elif kind == "CERTIFICATE" and not cert:
            cert = match.group(0)
    register(key)
    if "ENCRYPTED" in key:
        raise TokenError(
            f"the private key in {path} is encrypted",
            hint="Store it without a passphrase in a file only the probe's account may read",
        )
    if not key or not cert:
        missing = " and ".join(n for n, v in (("a private key", key), ("a certificate", cert)) if not v)
        raise TokenError(
            f"the certificate file {path} has no {missing} in PEM",
            hint="Give one PEM file with the private key and the certificate uploaded to the app registration",
        )
    return key, cert


def read_certificate(path: str) -> Certificate:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError as exc:
        raise TokenError(
            f"the certificate file {path} cannot be read ({exc.strerror})",
            hint="Give a PEM file the probe's account may read (and nobody else)",
        ) from None
    key, cert = split_pem(text, path)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        parsed = x509.load_pem_x509_certificate(cert.encode("ascii"))
    except ValueError:
        raise TokenError(f"the certificate in {path} cannot be read", hint="Give it in PEM") from None
    return Certificate(key, cert, parsed.fingerprint(hashes.SHA1()), parsed.fingerprint(hashes.SHA256()))  # noqa: S303


def microsoft_assertion(certificate: Certificate, client_id: str, token_url: str) -> str:
    """Microsoft's client assertion: RS256, x5t and x5t#S256 of the uploaded certificate."""
    import uuid
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "x5t": _b64url(certificate.sha1), "x5t#S256": _b64url(certificate.sha256)}
    claims = {
        "aud": token_url, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()),
        "nbf": now, "iat": now, "exp": now + ASSERTION_LIFETIME,
    }
    return sign_rs256(header, claims, certificate.private_key)


def google_assertion(info: Mapping[str, Any], subject: str, scope: str, token_url: str) -> str:
    """A service account's JWT for the bearer grant, acting for `subject` (domain-wide delegation)."""
    now = int(time.time())
    header: Dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if info.get("private_key_id"):
        header["kid"] = info["private_key_id"]
    claims = {
        "iss": info.get("client_email"), "sub": subject, "scope": scope, "aud": token_url,
        "iat": now, "exp": now + 3600,
    }
    return sign_rs256(header, claims, str(info.get("private_key", "")))

#!/usr/bin/env python3
"""A small OAuth2 authorization server on loopback: the identity provider of the test stack.

The mail stack's Dovecot (tools/mailstack.py) accepts SASL XOAUTH2 and OAUTHBEARER logins by
asking this service about each token (token introspection, no cache), and Postfix does SMTP AUTH
through that Dovecot; the sensor gets its tokens from this service's token endpoint.  Standard
library only (the optional ``cryptography`` package adds real signatures, see below); a
``http.server`` in a thread, plain HTTP or HTTPS.

Endpoints
---------
``POST /token`` (RFC 6749 form body; client authentication by HTTP Basic, by the form fields
``client_id`` / ``client_secret``, or by a ``client_assertion`` JWT):

- ``grant_type=client_credentials`` [+ ``scope``]: an app-only token (Microsoft 365 style).  A
  scope word ending in ``/.default`` stands for every scope the client was registered with.
  Which mailboxes the token may open is the app's "mailbox permission" (``add_client(...,
  mailboxes=[...])``), checked when Dovecot introspects the token, not when it is issued: like
  Exchange Online, the token is issued and the login is refused.
- ``grant_type=refresh_token`` + ``refresh_token`` [+ ``scope``, a subset of the grant's]: a user
  token.  With rotation on (the default) the answer has a new refresh token and the old one is
  dead (``invalid_grant``); with rotation off the answer has no refresh token (Google style).
- ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` + ``assertion``: a Google service
  account with domain-wide delegation.  The JWT (RS256, signed with the account's key) has
  ``iss`` = the account's client_email, ``sub`` = the user to act as, ``scope``, ``aud`` = the
  token URL, ``iat`` and ``exp`` (at most an hour apart).

Answers are ``{"access_token", "token_type": "Bearer", "expires_in", ["refresh_token"],
"scope"}``; errors are RFC 6749 JSON with an ``error_description``: ``invalid_request`` 400,
``invalid_client`` 401 (with ``WWW-Authenticate: Basic`` when Basic was used),
``invalid_grant`` 400, ``invalid_scope`` 400, ``unauthorized_client`` 400,
``unsupported_grant_type`` 400, ``temporarily_unavailable`` 503 (``set_down``).

JWT signatures (client assertions, RS256 or PS256, against the certificate given to
``add_client``; service-account assertions, RS256, against the key made by
``add_service_account``) are verified when the ``cryptography`` package can be imported
(``TokenService.verifies_signatures`` says so); without it only the claims are checked.

``POST /introspect`` (form ``token=...``), for Dovecot: ``{"active": false}`` unless the token is
known, unexpired and unrevoked; then ``{"active": true, "username", "scope", "mailboxes",
"client_id", "token_type", "exp", "iat", "sub"}``.  ``username`` is the token's user (for an
app-only token: ``app@<domain of its first mailbox>``, Dovecot only compares domains) and
``mailboxes`` is ",a@d,b@d," (the user's own address, or the app's permitted mailboxes), which
Dovecot checks against the login name (see tools/mailstack.py, DOVECOT_OAUTH2_CONF).

Faults on demand: ``set_down(True)`` makes both endpoints answer 503 (Dovecot then answers IMAP
``NO [UNAVAILABLE] Temporary authentication failure. [HOST:TIME]``, Postfix its usual ``535
5.7.8 Error: authentication failed: (reason unavailable)``; see tests/test_oauth_stack.py),
``set_hang(seconds)`` holds every token request that long (introspection is not held),
``revoke(token)`` and ``expire(token)`` kill one token.

From Python::

    with TokenService(certfile=..., keyfile=...) as service:       # port 0: any free port
        service.add_client("sensor-app", secret="s3cret", mailboxes=["probe@roundtrip.test"])
        token = service.mint("probe@roundtrip.test")                # a user token, directly
        service.requests("introspect")                              # how often Dovecot asked

Command line (for trying things by hand)::

    python3 tools/tokenservice.py [--port N] [--cert PEM --key PEM] [--client ID:SECRET:MAILBOX,...]
                                  [--mint USER]...

Tokens are opaque random strings with distinctive prefixes (``rtAT-`` access, ``rtRT-`` refresh,
``rtCS-`` generated client secrets), easy to look for in leak tests; ``secrets()`` lists every
secret the service has handed out or been given.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import secrets as _secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

try:  # optional: real signature checks and key generation
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    HAVE_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - the test venvs have it (keyring pulls it in)
    HAVE_CRYPTOGRAPHY = False

MAIL_SCOPE = "https://mail.roundtrip.test/"  # as Google's https://mail.google.com/
DEFAULT_LIFETIME = 3600
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 300
SERVICE_ACCOUNT_DOMAIN = "roundtrip-test.iam.gserviceaccount.com"


class OAuthError(Exception):
    """An RFC 6749 error answer."""

    def __init__(self, error: str, description: str, status: int = 400, basic: bool = False) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.basic = basic  # answer with WWW-Authenticate: Basic (the client used Basic)


@dataclass
class Client:
    client_id: str
    secret: Optional[str] = None
    certificate_pem: Optional[str] = None
    scope: List[str] = field(default_factory=lambda: [MAIL_SCOPE])
    mailboxes: List[str] = field(default_factory=list)


@dataclass
class ServiceAccount:
    client_email: str
    client_id: str
    private_key_id: str
    public_key_pem: Optional[str]
    scope: List[str]
    users: Optional[List[str]]  # None: any user (domain-wide delegation for the whole domain)


@dataclass
class Token:
    value: str
    kind: str  # "access" or "refresh"
    client_id: str
    user: Optional[str]  # None: app-only
    scope: List[str]
    issued: float
    expires: Optional[float]
    revoked: bool = False


class TokenService:
    """The token service; start() it (or use it as a context manager) before use.

    host/port: where to listen (port 0: a free port).  certfile/keyfile: serve HTTPS with this
    certificate (the mail stack's server certificate is valid for 127.0.0.1 and localhost).
    """

    verifies_signatures = HAVE_CRYPTOGRAPHY

    def __init__(self, host: str = "127.0.0.1", port: int = 0, certfile: Optional[str] = None,
                 keyfile: Optional[str] = None) -> None:
        self.host = host
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.url = ""
        self.token_url = ""
        self.introspect_url = ""
        self._lock = threading.RLock()
        self._wake = threading.Event()  # ends a set_hang() wait early (stop, reset, set_hang)
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._init_state()

    def _init_state(self) -> None:
        self._clients: Dict[str, Client] = {}
        self._accounts: Dict[str, ServiceAccount] = {}
        self._tokens: Dict[str, Token] = {}
        self._counts: Dict[str, int] = {}
        self._history: List[Dict[str, Any]] = []
        self._given_secrets: List[str] = []
        self._down = False
        self._hang = 0.0
        self._rotate = True
        self._lifetime: float = DEFAULT_LIFETIME

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Listen and serve in a daemon thread; return the base URL.  Idempotent."""
        if self._server is not None:
            return self.url
        server = _Server((self.host, self.port), _Handler)
        server.service = self
        scheme = "http"
        if self.certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certfile, self.keyfile)
            server.tls_context = context
            scheme = "https"
        self.port = server.server_address[1]
        self.url = f"{scheme}://{self.host}:{self.port}"
        self.token_url = self.url + "/token"
        self.introspect_url = self.url + "/introspect"
        self._wake.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"tokenservice-{self.port}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the port (requests held by set_hang are let go)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._wake.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> TokenService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- control ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every client, account and token; counters to 0; not down, no hang, rotation on."""
        with self._lock:
            self._wake.set()
            self._init_state()
            self._wake = threading.Event()

    def add_client(self, client_id: str, secret: Optional[str] = None, certificate_pem: Optional[str] = None,
                   scope: str = MAIL_SCOPE, mailboxes: Iterable[str] = ()) -> Client:
        """Register (or replace) an OAuth2 client.

        secret and/or certificate_pem are its credentials (neither: a public client, which only
        names itself); scope: the space-separated scope it may ask for; mailboxes: the
        addresses its app-only tokens may open (the mailbox permission).
        """
        client = Client(client_id, secret, certificate_pem, scope.split(), [m.lower() for m in mailboxes])
        with self._lock:
            self._clients[client_id] = client
            if secret:
                self._given_secrets.append(secret)
        return client

    def grant_mailbox(self, client_id: str, mailbox: str, allowed: bool = True) -> None:
        """Give an app the permission for one more mailbox, or take it away."""
        with self._lock:
            client = self._clients[client_id]
            if allowed and mailbox.lower() not in client.mailboxes:
                client.mailboxes.append(mailbox.lower())
            if not allowed and mailbox.lower() in client.mailboxes:
                client.mailboxes.remove(mailbox.lower())

    def add_service_account(self, client_email: Optional[str] = None, scope: str = MAIL_SCOPE,
                            users: Optional[Iterable[str]] = None) -> Dict[str, str]:
        """A Google-style service account with domain-wide delegation; returns its key JSON.

        The dict is what Google's console downloads (json.dumps it for a key file), with a fresh
        2048-bit RSA key and ``token_uri`` pointing here.  scope: what it may be delegated;
        users: whom it may act as (None: anyone).  Needs ``cryptography`` or the ``openssl``
        command for the key.
        """
        number = _secrets.randbelow(10**20)
        client_email = client_email or f"sensor-{number % 10**6:06d}@{SERVICE_ACCOUNT_DOMAIN}"
        key_pem, public_pem = generate_rsa_key()
        key_id = _secrets.token_hex(20)
        account = ServiceAccount(client_email, str(10**20 + number), key_id, public_pem, scope.split(),
                                 None if users is None else [u.lower() for u in users])
        with self._lock:
            self._accounts[client_email] = account
            self._given_secrets.append(key_pem)
        return {
            "type": "service_account",
            "project_id": "roundtrip-test",
            "private_key_id": key_id,
            "private_key": key_pem,
            "client_email": client_email,
            "client_id": account.client_id,
            "auth_uri": self.url + "/auth",
            "token_uri": self.token_url,
            "auth_provider_x509_cert_url": self.url + "/certs",
            "client_x509_cert_url": self.url + "/certs/" + urllib.parse.quote(client_email),
            "universe_domain": "googleapis.com",
        }

    def issue_refresh_token(self, client_id: str, user: str, scope: str = MAIL_SCOPE) -> str:
        """A refresh token of `client_id` for `user` (what a consent flow would have given)."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"no client {client_id!r}: add_client() first")
            return self._new_token("refresh", client_id, user.lower(), scope.split(), None).value

    def mint(self, user: str, scope: str = MAIL_SCOPE, lifetime: float = DEFAULT_LIFETIME,
             client_id: str = "minted") -> str:
        """A user access token, directly (no grant)."""
        with self._lock:
            return self._new_token("access", client_id, user.lower(), scope.split(), lifetime).value

    def mint_app(self, client_id: str, scope: str = MAIL_SCOPE, lifetime: float = DEFAULT_LIFETIME) -> str:
        """An app-only access token of a registered client, directly."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"no client {client_id!r}: add_client() first")
            return self._new_token("access", client_id, None, scope.split(), lifetime).value

    def revoke(self, token: str) -> None:
        """The token (access or refresh) is dead from now on."""
        with self._lock:
            self._tokens[token].revoked = True

    def expire(self, token: str) -> None:
        """The access token's life ends now (introspection says inactive)."""
        with self._lock:
            self._tokens[token].expires = time.time() - 1

    def set_down(self, down: bool = True) -> None:
        """Both endpoints answer 503 temporarily_unavailable while down."""
        with self._lock:
            self._down = down

    def set_hang(self, seconds: float) -> None:
        """Token requests are answered only after `seconds` (0: at once; ends current waits)."""
        with self._lock:
            self._hang = float(seconds)
            self._wake.set()
            self._wake = threading.Event()

    def rotate_refresh_tokens(self, rotate: bool = True) -> None:
        with self._lock:
            self._rotate = rotate

    def set_lifetime(self, seconds: float) -> None:
        """expires_in of the access tokens the token endpoint issues from now on."""
        with self._lock:
            self._lifetime = seconds

    def requests(self, kind: str) -> int:
        """How many requests reached an endpoint: "token" or "introspect" (counted when received)."""
        with self._lock:
            return self._counts.get(kind, 0)

    def history(self, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        """The requests received (kind, form fields, Basic client id, answer status, error)."""
        with self._lock:
            return [dict(entry) for entry in self._history if kind is None or entry["kind"] == kind]

    def tokens(self, kind: Optional[str] = None, user: Optional[str] = None) -> List[str]:
        """Tokens issued so far, oldest first; kind "access" or "refresh"."""
        with self._lock:
            return [t.value for t in self._tokens.values()
                    if (kind is None or t.kind == kind) and (user is None or t.user == user.lower())]

    def is_active(self, token: str) -> bool:
        with self._lock:
            found = self._tokens.get(token)
            return found is not None and self._alive(found)

    def secrets(self) -> List[str]:
        """Every secret known here: tokens, client secrets, service account keys (for leak tests)."""
        with self._lock:
            return [*self._tokens, *self._given_secrets]

    # ---- the endpoints ------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def _record(self, entry: Dict[str, Any]) -> None:
        with self._lock:
            self._history.append(entry)

    def handle_token(self, form: Dict[str, str], authorization: Optional[str],
                     path: str = "/token") -> Tuple[int, Dict[str, Any]]:
        """One token request: (HTTP status, JSON body).  path: where it was POSTed (an assertion's aud)."""
        self._count("token")
        with self._lock:
            hang, wake, down = self._hang, self._wake, self._down
        if hang > 0:
            wake.wait(hang)
        entry: Dict[str, Any] = {"kind": "token", "path": path, "endpoint": self.url + path, "form": dict(form),
                                 "time": time.time()}
        try:
            if down:
                raise OAuthError("temporarily_unavailable", "the token service is down (set_down)", 503)
            with self._lock:
                body = self._grant(form, authorization, entry)
            entry["status"] = 200
            return 200, body
        except OAuthError as error:
            entry.update(status=error.status, error=error.error)
            body = {"error": error.error, "error_description": error.description}
            if error.basic:
                body["_basic"] = True
            return error.status, body
        finally:
            self._record(entry)

    def handle_introspect(self, form: Dict[str, str]) -> Tuple[int, Dict[str, Any]]:
        self._count("introspect")
        with self._lock:
            entry: Dict[str, Any] = {"kind": "introspect", "time": time.time()}
            try:
                if self._down:
                    entry["status"] = 503
                    return 503, {"error": "temporarily_unavailable",
                                 "error_description": "the token service is down (set_down)"}
                token = self._tokens.get(form.get("token", ""))
                entry["status"] = 200
                if token is None or token.kind != "access" or not self._alive(token):
                    entry["active"] = False
                    return 200, {"active": False}
                entry["active"] = True
                if token.user is not None:
                    username, mailboxes = token.user, [token.user]
                else:
                    client = self._clients.get(token.client_id)
                    mailboxes = list(client.mailboxes) if client is not None else []
                    domain = mailboxes[0].partition("@")[2] if mailboxes else "invalid"
                    username = f"app@{domain}"
                return 200, {
                    "active": True,
                    "username": username,
                    "scope": " ".join(token.scope),
                    "mailboxes": "," + ",".join(mailboxes) + ",",
                    "client_id": token.client_id,
                    "token_type": "Bearer",
                    "sub": token.user or token.client_id,
                    "iat": int(token.issued),
                    "exp": int(token.expires) if token.expires is not None else None,
                }
            finally:
                self._history.append(entry)

    def discovery(self, path: str) -> Dict[str, Any]:
        """An OpenID configuration document (MSAL reads <authority>/v2.0/.well-known/...).

        For /TENANT/v2.0/.well-known/openid-configuration the token endpoint is
        /TENANT/oauth2/v2.0/token (Microsoft's layout); otherwise it is /token.
        """
        self._count("discovery")
        suffix = "/v2.0/.well-known/openid-configuration"
        if path.endswith(suffix) and path != suffix:
            prefix = path[: -len(suffix)]
            token_endpoint, issuer = f"{self.url}{prefix}/oauth2/v2.0/token", f"{self.url}{prefix}/v2.0"
        else:
            token_endpoint, issuer = self.token_url, self.url
        return {
            "issuer": issuer,
            "token_endpoint": token_endpoint,
            "authorization_endpoint": token_endpoint.replace("/token", "/authorize"),
            "device_authorization_endpoint": token_endpoint.replace("/token", "/devicecode"),
            "introspection_endpoint": self.introspect_url,
            "jwks_uri": self.url + "/keys",
            "grant_types_supported": ["client_credentials", "refresh_token", JWT_BEARER_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                      "private_key_jwt"],
            "response_types_supported": ["code"],
            "scopes_supported": [MAIL_SCOPE],
        }

    # ---- grants (called with the lock held) ------------------------------------------------------

    def _grant(self, form: Dict[str, str], authorization: Optional[str], entry: Dict[str, Any]) -> Dict[str, Any]:
        grant = form.get("grant_type", "")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is missing")
        if grant == JWT_BEARER_GRANT:
            return self._grant_jwt_bearer(form)
        if grant not in ("client_credentials", "refresh_token"):
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported here")
        client = self._authenticate_client(form, authorization, entry)
        if grant == "client_credentials":
            scope = self._client_scope(client, form.get("scope"))
            token = self._new_token("access", client.client_id, None, scope, self._lifetime)
            return self._answer(token)
        return self._grant_refresh(client, form)

    def _authenticate_client(self, form: Dict[str, str], authorization: Optional[str],
                             entry: Dict[str, Any]) -> Client:
        basic = False
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        if authorization and authorization[:6].lower() == "basic ":
            basic = True
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                user, _, password = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise OAuthError("invalid_client", "malformed HTTP Basic credentials", 401, basic) from None
            # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
            if form.get("client_id") and form["client_id"] != client_id:
                raise OAuthError("invalid_request", "client_id in the body differs from HTTP Basic")
        entry["auth"] = "basic" if basic else "form"
        assertion = form.get("client_assertion")
        if assertion is not None:
            entry["auth"] = "assertion"
            if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
                raise OAuthError("invalid_request", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
            return self._check_client_assertion(assertion, client_id, entry["endpoint"])
        entry["client_id"] = client_id
        if not client_id:
            raise OAuthError("invalid_client", "no client authentication given", 401, basic)
        client = self._clients.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", f"client {client_id!r} is not registered", 401, basic)
        if client.secret is not None:
            if secret is None:
                raise OAuthError("invalid_client", "the client secret is missing", 401, basic)
            if not _secrets.compare_digest(secret.encode(), client.secret.encode()):
                raise OAuthError("invalid_client", "invalid client secret", 401, basic)
        elif client.certificate_pem is not None:
            raise OAuthError("invalid_client", "this client authenticates with a certificate (client_assertion)",
                             401, basic)
        elif secret:
            raise OAuthError("invalid_client", "this public client has no secret", 401, basic)
        return client

    def _check_client_assertion(self, assertion: str, client_id: Optional[str], endpoint: str) -> Client:
        header, claims, signed, signature = _parse_jwt(assertion, "invalid_client", 401)
        issuer = claims.get("iss")
        if claims.get("sub") != issuer or not isinstance(issuer, str):
            raise OAuthError("invalid_client", "client_assertion: iss and sub must both be the client id", 401)
        if client_id and client_id != issuer:
            raise OAuthError("invalid_client", "client_assertion: iss is not the client_id", 401)
        client = self._clients.get(issuer)
        if client is None:
            raise OAuthError("invalid_client", f"client {issuer!r} is not registered", 401)
        if client.certificate_pem is None:
            raise OAuthError("invalid_client", "client_assertion: no certificate registered for this client", 401)
        self._check_times(claims, "invalid_client", 401)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if endpoint not in audiences:
            raise OAuthError("invalid_client", f"client_assertion: aud must be {endpoint}", 401)
        for name, digest in (("x5t", hashlib.sha1), ("x5t#S256", hashlib.sha256)):
            # base64url with or without '=' padding: MSAL pads, Entra ID accepts both
            given = header.get(name)
            if isinstance(given, str) and given.rstrip("=") != _thumbprint(client.certificate_pem, digest).rstrip("="):
                raise OAuthError("invalid_client", f"client_assertion: {name} is not the registered certificate", 401)
        _verify_signature(header.get("alg"), client.certificate_pem, signed, signature, ("RS256", "PS256"),
                          "invalid_client", 401)
        return client

    def _grant_refresh(self, client: Client, form: Dict[str, str]) -> Dict[str, Any]:
        value = form.get("refresh_token")
        if not value:
            raise OAuthError("invalid_request", "refresh_token is missing")
        old = self._tokens.get(value)
        if old is None or old.kind != "refresh":
            raise OAuthError("invalid_grant", "unknown refresh token")
        if old.revoked:
            raise OAuthError("invalid_grant", "the refresh token was revoked or already used")
        if old.expires is not None and old.expires <= time.time():
            raise OAuthError("invalid_grant", "the refresh token has expired")
        if old.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        scope = old.scope
        if form.get("scope"):
            asked = form["scope"].split()
            extra = [word for word in asked if word not in old.scope]
            if extra:
                raise OAuthError("invalid_scope", f"scope not granted by this refresh token: {' '.join(extra)}")
            scope = asked
        access = self._new_token("access", client.client_id, old.user, scope, self._lifetime)
        refresh = None
        if self._rotate:
            old.revoked = True
            refresh = self._new_token("refresh", client.client_id, old.user, old.scope, None)
        return self._answer(access, refresh)

    def _grant_jwt_bearer(self, form: Dict[str, str]) -> Dict[str, Any]:
        assertion = form.get("assertion")
        if not assertion:
            raise OAuthError("invalid_request", "assertion is missing")
        header, claims, signed, signature = _parse_jwt(assertion, "invalid_grant", 400)
        account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")  # Google's wording for an unknown key
        if "kid" in header and header["kid"] != account.private_key_id:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != self.token_url:
            raise OAuthError("invalid_grant", f"Invalid JWT: aud must be {self.token_url}")
        self._check_times(claims, "invalid_grant", 400)
        if account.public_key_pem is not None:  # (always, with a generated key)
            _verify_signature(header.get("alg"), account.public_key_pem, signed, signature, ("RS256",),
                              "invalid_grant", 400, "Invalid JWT Signature.")
        scope = str(claims.get("scope") or "").split()
        if not scope:
            raise OAuthError("invalid_scope", "Invalid JWT: no scope in the assertion")
        extra = [word for word in scope if word not in account.scope]
        if extra:
            raise OAuthError("unauthorized_client",
                             f"Client is unauthorized to retrieve access tokens using this method, or client "
                             f"not authorized for any of the scopes requested: {' '.join(extra)}")
        user = claims.get("sub")
        if user is None:
            user = account.client_email
        elif account.users is not None and str(user).lower() not in account.users:
            raise OAuthError("unauthorized_client", f"the service account may not act as {user}")
        token = self._new_token("access", account.client_email, str(user).lower(), scope, self._lifetime)
        return self._answer(token)

    def _client_scope(self, client: Client, asked: Optional[str]) -> List[str]:
        if not asked:
            return list(client.scope)
        scope: List[str] = []
        for word in asked.split():
            if word.endswith("/.default"):
                scope += [w for w in client.scope if w not in scope]
            elif word in client.scope:
                if word not in scope:
                    scope.append(word)
            else:
                raise OAuthError("invalid_scope", f"the client may not ask for the scope {word!r}")
        return scope

    @staticmethod
    def _check_times(claims: Dict[str, Any], error: str, status: int) -> None:
        now = time.time()
        try:
            exp, iat = float(claims["exp"]), float(claims.get("iat", now))
        except (KeyError, TypeError, ValueError):
            raise OAuthError(error, "Invalid JWT: exp (and iat) must be numbers", status) from None
        if exp <= now - CLOCK_SKEW:
            raise OAuthError(error, "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
                             " The assertion has expired.", status)
        if iat > now + CLOCK_SKEW or exp - iat > MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
            raise OAuthError(error, "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                             "reasonable timeframe. Check your iat and exp values in the JWT claim.", status)

    def _new_token(self, kind: str, client_id: str, user: Optional[str], scope: List[str],
                   lifetime: Optional[float]) -> Token:
        prefix = "rtAT-" if kind == "access" else "rtRT-"
        now = time.time()
        token = Token(prefix + _secrets.token_urlsafe(32), kind, client_id, user, list(scope), now,
                      None if lifetime is None else now + lifetime)
        self._tokens[token.value] = token
        return token

    def _answer(self, access: Token, refresh: Optional[Token] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_in": max(0, round((access.expires or time.time()) - time.time())),
            "scope": " ".join(access.scope),
        }
        if refresh is not None:
            body["refresh_token"] = refresh.value
        return body

    @staticmethod
    def _alive(token: Token) -> bool:
        return not token.revoked and (token.expires is None or token.expires > time.time())


# ---- HTTP plumbing --------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    service: TokenService
    tls_context: Optional[ssl.SSLContext] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_connections: set = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every client still connected (Dovecot keeps its connection alive)."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def get_request(self) -> Tuple[Any, Any]:
        sock, address = super().get_request()
        sock.settimeout(30)
        if self.tls_context is not None:
            # The handshake happens in the handler's thread, so a slow client holds up no one.
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up or failed the TLS handshake is not our problem


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # Dovecot keeps its connection alive
    disable_nagle_algorithm = True  # answer at once, as a production endpoint would (no 40 ms ACK wait)

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in ("", "application/x-www-form-urlencoded"):
            self._json(400, {"error": "invalid_request",
                             "error_description": "the body must be application/x-www-form-urlencoded"})
            return
        try:
            pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            self._json(400, {"error": "invalid_request", "error_description": "the body is not UTF-8"})
            return
        form: Dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                self._json(400, {"error": "invalid_request", "error_description": f"{key} given twice"})
                return
            form[key] = value
        service = self.server.service
        if path == "/token" or path.endswith("/oauth2/v2.0/token") or path.endswith("/oauth2/token"):
            status, body = service.handle_token(form, self.headers.get("Authorization"), path)
        elif path == "/introspect":
            status, body = service.handle_introspect(form)
        else:
            status, body = 404, {"error": "not_found", "error_description": f"no endpoint {path}"}
        self._json(status, body)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.endswith("/.well-known/openid-configuration"):
            self._json(200, self.server.service.discovery(path))
        else:
            self._json(405, {"error": "invalid_request", "error_description": "use POST"})

    def _json(self, status: int, body: Dict[str, Any]) -> None:
        basic = body.pop("_basic", False)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Pragma", "no-cache")
            if basic:
                self.send_header("WWW-Authenticate", 'Basic realm="roundtrip.test"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


# ---- JWT and keys -------------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parse_jwt(token: str, error: str, status: int) -> Tuple[Dict[str, Any], Dict[str, Any], bytes, bytes]:
    """(header, claims, signed part, signature); OAuthError(error) if it is not a JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        raise OAuthError(error, "the assertion is not a JWT (three dot-separated parts)", status)
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise OAuthError(error, "the assertion is not a well-formed JWT", status) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError(error, "the assertion is not a well-formed JWT", status)
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _verify_signature(alg: Any, key_pem: str, signed: bytes, signature: bytes, allowed: Tuple[str, ...],
                      error: str, status: int, message: str = "") -> None:
    message = message or "the assertion's signature does not verify"
    if alg not in allowed:
        raise OAuthError(error, f"the assertion's alg must be one of {', '.join(allowed)}, not {alg!r}", status)
    if not HAVE_CRYPTOGRAPHY:
        return  # claims only (see the module docstring)
    public_key: Any
    if "CERTIFICATE" in key_pem:
        public_key = x509.load_pem_x509_certificate(key_pem.encode()).public_key()
    else:
        public_key = serialization.load_pem_public_key(key_pem.encode())
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise OAuthError(error, "the registered key is not an RSA key", status)
    pad: padding.AsymmetricPadding
    if alg == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    else:
        pad = padding.PKCS1v15()
    try:
        public_key.verify(signature, signed, pad, hashes.SHA256())
    except InvalidSignature:
        raise OAuthError(error, message, status) from None


def _thumbprint(certificate_pem: str, digest: Any) -> str:
    der = ssl.PEM_cert_to_DER_cert(certificate_pem)
    return _b64url(digest(der).digest())


def generate_rsa_key() -> Tuple[str, str]:
    """A fresh 2048-bit RSA key: (PKCS#8 private key PEM, public key PEM)."""
    if HAVE_CRYPTOGRAPHY:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return private, public
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the cryptography package nor the openssl command is available")
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key.pem"
        subprocess.run([openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", str(key_file)], check=True, capture_output=True)
        public = subprocess.run([openssl, "pkey", "-in", str(key_file), "-pubout"], check=True,
                                capture_output=True).stdout.decode()
        return key_file.read_text(), public


def make_client_certificate(client_id: str = "sensor-app", days: int = 365) -> Tuple[str, str]:
    """A self-signed certificate for an app's client assertions: (certificate PEM, key PEM).

    Register the certificate with add_client(certificate_pem=...); sign with the key.
    """
    key_pem, _ = generate_rsa_key()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key.pem"
        key_file.write_text(key_pem)
        cert = subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key_file), "-sha256",
                               "-days", str(days), "-subj", f"/CN={client_id}"],
                              check=True, capture_output=True).stdout.decode()
    return cert, key_pem


def sign_jwt(claims: Dict[str, Any], key_pem: str, alg: str = "RS256", headers: Optional[Dict[str, Any]] = None) -> str:
    """An RS256/PS256 JWT signed with key_pem (needs cryptography): for tests and by-hand tries."""
    if not HAVE_CRYPTOGRAPHY:
        raise RuntimeError("signing needs the cryptography package")
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    header = {"alg": alg, "typ": "JWT", **(headers or {})}
    signed = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        if alg == "PS256" else padding.PKCS1v15()
    )
    return f"{signed}.{_b64url(key.sign(signed.encode(), pad, hashes.SHA256()))}"


def certificate_thumbprint(certificate_pem: str, sha256: bool = False) -> str:
    """The x5t (SHA-1) or x5t#S256 header value for a certificate."""
    return _thumbprint(certificate_pem, hashlib.sha256 if sha256 else hashlib.sha1)


# ---- command line ---------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="A loopback OAuth2 token service for the prtg-roundtrip test stack.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--key", help="the certificate's key (PEM)")
    parser.add_argument("--client", action="append", default=[],
                        help="register ID:SECRET:MAILBOX[,MAILBOX...] (repeatable)")
    parser.add_argument("--mint", action="append", default=[], help="print a user token for USER (repeatable)")
    args = parser.parse_args(argv)
    service = TokenService(args.host, args.port, args.cert, args.key)
    service.start()
    for spec in args.client:
        client_id, _, rest = spec.partition(":")
        secret, _, mailboxes = rest.partition(":")
        service.add_client(client_id, secret or None, mailboxes=[m for m in mailboxes.split(",") if m])
    print(json.dumps({
        "url": service.url, "token_url": service.token_url, "introspect_url": service.introspect_url,
        "tokens": {user: service.mint(user) for user in args.mint},
    }, indent=2), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

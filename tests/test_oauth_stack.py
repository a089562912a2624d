"""The server side of OAuth2 logins: the stack's Dovecot and Postfix with the local token service.

These tests use plain clients (a few lines of raw IMAP, smtplib, imapclient, urllib), not the
sensor: they prove what the sensor's OAuth2 code is tested against, and record what the servers
say when they refuse, which the sensor's error wording relies on.

What the servers answer (Dovecot 2.3.19, Postfix 3.7, seen in these tests):

- A token Dovecot refuses (unknown, revoked, expired, wrong scope, another user's, an app without
  permission for that mailbox) gets one error challenge, base64 JSON, the same in every case:
  XOAUTH2 ``+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=``, i.e.
  ``{"status":"401","schemes":"bearer","scope":"mail"}`` (Google's form); OAUTHBEARER
  ``+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=``, i.e. ``{"status":"invalid_token"}`` (RFC 7628).
  After the client's dummy response (empty for XOAUTH2, ``\\x01`` for OAUTHBEARER) IMAP ends
  with ``NO [AUTHENTICATIONFAILED] Authentication failed.``.  SMTP: ``334`` with the same base64
  JSON, then ``535 5.7.8 Error: authentication failed: (reason unavailable)`` — the same 535 as a
  wrong password; Postfix says nothing more.
- The token service down (introspection answers 503, or nothing listens): IMAP ``NO [UNAVAILABLE] Temporary
  authentication failure. [HOST:YYYY-MM-DD HH:MM:SS]`` with no JSON challenge; SMTP, again,
  ``535 5.7.8 Error: authentication failed: (reason unavailable)``: from SMTP alone "identity
  provider down" cannot be told from "token refused".
- Dovecot counts loopback connections as secure: a token is accepted on imap_plain and before
  STARTTLS.  The client has to insist on TLS itself.
"""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from conftest import imap_session, tokenservice
from imapclient import IMAPClient

REFUSED_CHALLENGE = {
    "XOAUTH2": b"eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=",
    "OAUTHBEARER": b"eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=",
}
IMAP_REFUSED = "NO [AUTHENTICATIONFAILED] Authentication failed."
IMAP_UNAVAILABLE = "NO [UNAVAILABLE] Temporary authentication failure."
SMTP_REFUSED = (535, "5.7.8 Error: authentication failed: (reason unavailable)")

MECHANISMS = ["XOAUTH2", "OAUTHBEARER"]
IMAP_PORTS = ["imap_plain", "imap_starttls", "imaps"]
SMTP_PORTS = ["submission", "smtps"]


@pytest.fixture
def idp(tokens: Any) -> Any:
    """The session's token service, reset before and after the test."""
    tokens.reset()
    yield tokens
    tokens.reset()


def oauth_user(stack: Dict[str, Any]) -> str:
    return str(stack["oauth2"]["users"]["oauth"]["login"])


def tls_context(stack: Dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack["ca_file"])


def sasl_response(mechanism: str, user: str, token: str, host: str = "127.0.0.1", port: int = 0) -> bytes:
    """The client's first SASL message: XOAUTH2 (Google's format) or OAUTHBEARER (RFC 7628)."""
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def dummy_response(mechanism: str) -> bytes:
    """What a client answers to the error challenge (RFC 7628 3.2.3; XOAUTH2: empty)."""
    return b"\x01" if mechanism == "OAUTHBEARER" else b""


# ---- a small IMAP client that shows every line ------------------------------------------------


class RawImap:
    """Just enough IMAP to log in with a token and see the server's exact answers."""

    def __init__(self, stack: Dict[str, Any], port_name: str) -> None:
        where = stack["ports"][port_name]
        self.sock: Any = socket.create_connection((where["host"], where["port"]), timeout=10)
        self.context = tls_context(stack)
        if port_name == "imaps":
            self.sock = self.context.wrap_socket(self.sock, server_hostname=where["host"])
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()
        if port_name == "imap_starttls":
            self.send("s1 STARTTLS")
            assert self.line().startswith("s1 OK")
            self.file.close()
            self.sock = self.context.wrap_socket(self.sock, server_hostname=where["host"])
            self.file = self.sock.makefile("rb")
        self.host, self.port = where["host"], where["port"]

    def line(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def authenticate(self, mechanism: str, user: str, token: str) -> Tuple[str, List[bytes]]:
        """AUTHENTICATE with SASL-IR: (the tagged answer without its tag, decoded challenges)."""
        initial = base64.b64encode(sasl_response(mechanism, user, token, self.host, self.port)).decode()
        self.send(f"a1 AUTHENTICATE {mechanism} {initial}")
        challenges = []
        while True:
            line = self.line()
            if line.startswith("+"):
                challenges.append(base64.b64decode(line[1:].strip()))
                self.send(base64.b64encode(dummy_response(mechanism)).decode())
            elif line.startswith("a1 "):
                return line[3:], challenges
            elif not line:
                raise ConnectionError("the server hung up")

    def command(self, text: str) -> str:
        self.send(f"c1 {text}")
        while True:
            line = self.line()
            if line.startswith("c1 ") or not line:
                return line[3:]

    def close(self) -> None:
        try:
            self.send("z1 LOGOUT")
        except OSError:
            pass
        self.sock.close()


def imap_login(stack: Dict[str, Any], port_name: str, mechanism: str, user: str, token: str) -> Tuple[str, List[bytes]]:
    client = RawImap(stack, port_name)
    try:
        answer, challenges = client.authenticate(mechanism, user, token)
        if answer.startswith("OK"):
            assert client.command("SELECT INBOX").startswith("OK"), "logged in, but no mailbox"
        return answer, challenges
    finally:
        client.close()


def smtp_connect(stack: Dict[str, Any], port_name: str) -> smtplib.SMTP:
    where = stack["ports"][port_name]
    client: smtplib.SMTP
    if port_name == "smtps":
        client = smtplib.SMTP_SSL(where["host"], where["port"], context=tls_context(stack), timeout=10)
    else:
        client = smtplib.SMTP(where["host"], where["port"], timeout=10)
        client.starttls(context=tls_context(stack))
    client.ehlo("probe.roundtrip.test")
    return client


def smtp_login(stack: Dict[str, Any], port_name: str, mechanism: str, user: str,
               token: str) -> Tuple[Tuple[int, str], List[bytes]]:
    """AUTH with an initial response: ((code, text) of the final answer, decoded challenges)."""
    client = smtp_connect(stack, port_name)
    try:
        where = stack["ports"][port_name]
        initial = base64.b64encode(sasl_response(mechanism, user, token, where["host"], where["port"])).decode()
        code, text = client.docmd("AUTH", f"{mechanism} {initial}")
        challenges = []
        while code == 334:
            challenges.append(base64.b64decode(text))
            code, text = client.docmd(base64.b64encode(dummy_response(mechanism)).decode())
        return (code, text.decode()), challenges
    finally:
        client.close()


def refused_challenge(mechanism: str) -> List[bytes]:
    """The decoded error challenge Dovecot sends for a refused token."""
    return [base64.b64decode(REFUSED_CHALLENGE[mechanism])]


def assert_imap_refused(stack: Dict[str, Any], port_name: str, mechanism: str, user: str, token: str) -> None:
    answer, challenges = imap_login(stack, port_name, mechanism, user, token)
    assert answer == IMAP_REFUSED
    assert challenges == refused_challenge(mechanism)


def assert_smtp_refused(stack: Dict[str, Any], port_name: str, mechanism: str, user: str, token: str) -> None:
    answer, challenges = smtp_login(stack, port_name, mechanism, user, token)
    assert answer == SMTP_REFUSED
    assert challenges == refused_challenge(mechanism)


# ---- logins that work ----------------------------------------------------------------------------


@pytest.mark.parametrize("port_name", IMAP_PORTS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_imap_token_login(stack: Dict[str, Any], idp: Any, mechanism: str, port_name: str) -> None:
    """A minted token opens the password-less mailbox on every IMAP port, also in clear on
    imap_plain: Dovecot counts loopback as secure."""
    user = oauth_user(stack)
    token = idp.mint(user)
    answer, challenges = imap_login(stack, port_name, mechanism, user, token)
    assert answer.startswith("OK"), answer
    assert challenges == []
    assert idp.requests("introspect") == 1


@pytest.mark.parametrize("port_name", SMTP_PORTS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_smtp_token_login(stack: Dict[str, Any], idp: Any, mechanism: str, port_name: str) -> None:
    """SMTP AUTH through Dovecot on submission (after STARTTLS) and smtps."""
    user = stack["users"]["sender"]["login"]
    token = idp.mint(user)
    answer, challenges = smtp_login(stack, port_name, mechanism, user, token)
    assert answer == (235, "2.7.0 Authentication successful"), answer
    assert challenges == []
    assert idp.requests("introspect") == 1


def test_smtp_offers_the_oauth_mechanisms(stack: Dict[str, Any]) -> None:
    client = smtp_connect(stack, "submission")
    try:
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]
    finally:
        client.close()


def test_imapclient_logins(stack: Dict[str, Any], idp: Any) -> None:
    """What the sensor uses: imapclient's oauth2_login (XOAUTH2) and oauthbearer_login."""
    user = oauth_user(stack)
    token = idp.mint(user)
    where = stack["ports"]["imaps"]
    for login in ("oauth2_login", "oauthbearer_login"):
        client = IMAPClient(where["host"], port=where["port"], ssl=True, ssl_context=tls_context(stack), timeout=10)
        try:
            getattr(client, login)(user, token)
            assert client.select_folder("INBOX")[b"EXISTS"] >= 0
        finally:
            client.logout()


def test_mail_to_the_oauth_mailbox_round_trip(stack: Dict[str, Any], idp: Any) -> None:
    """Send with a token on submission, read with a token over IMAP: the whole stack with OAuth2."""
    sender, user = stack["users"]["sender"]["login"], oauth_user(stack)
    client = smtp_connect(stack, "submission")
    try:
        client.docmd("AUTH", "XOAUTH2 " + base64.b64encode(sasl_response("XOAUTH2", sender, idp.mint(sender))).decode())
        marker = f"oauth-round-trip-{time.time_ns()}"
        client.sendmail(sender, [user], f"From: {sender}\r\nTo: {user}\r\nSubject: {marker}\r\n\r\nhello\r\n")
    finally:
        client.close()
    where = stack["ports"]["imaps"]
    imap = IMAPClient(where["host"], port=where["port"], ssl=True, ssl_context=tls_context(stack), timeout=10)
    try:
        imap.oauth2_login(user, idp.mint(user))
        imap.select_folder("INBOX")
        found: List[int] = []
        for _ in range(500):
            found = imap.search(["SUBJECT", marker])
            if found:
                break
            time.sleep(0.01)
            imap.noop()
        assert found, "the mail did not arrive"
        imap.delete_messages(found)
        imap.expunge()
    finally:
        imap.logout()


# ---- logins that are refused ------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_revoked_token_refused(stack: Dict[str, Any], idp: Any, mechanism: str) -> None:
    """Accepted, revoked, refused at the very next login (no cache in Dovecot)."""
    user = oauth_user(stack)
    token = idp.mint(user)
    answer, _ = imap_login(stack, "imaps", mechanism, user, token)
    assert answer.startswith("OK")
    idp.revoke(token)
    assert_imap_refused(stack, "imaps", mechanism, user, token)
    assert_smtp_refused(stack, "submission", mechanism, user, token)
    assert idp.requests("introspect") == 3


def test_expired_token_refused(stack: Dict[str, Any], idp: Any) -> None:
    user = oauth_user(stack)
    token = idp.mint(user)
    idp.expire(token)
    assert_imap_refused(stack, "imaps", "XOAUTH2", user, token)
    short = idp.mint(user, lifetime=0.5)
    time.sleep(0.6)  # the token's own lifetime, not a measurement
    assert_imap_refused(stack, "imaps", "XOAUTH2", user, short)


def test_unknown_token_refused(stack: Dict[str, Any], idp: Any) -> None:
    assert_imap_refused(stack, "imaps", "OAUTHBEARER", oauth_user(stack), "rtAT-no-such-token")


def test_wrong_scope_refused(stack: Dict[str, Any], idp: Any) -> None:
    user = oauth_user(stack)
    token = idp.mint(user, scope="https://other.roundtrip.test/ openid")
    assert_imap_refused(stack, "imaps", "XOAUTH2", user, token)
    assert_smtp_refused(stack, "smtps", "XOAUTH2", user, token)
    both = idp.mint(user, scope=f"openid {tokenservice.MAIL_SCOPE}")
    assert imap_login(stack, "imaps", "XOAUTH2", user, both)[0].startswith("OK")


def test_user_token_opens_only_its_own_mailbox(stack: Dict[str, Any], idp: Any) -> None:
    token = idp.mint(stack["users"]["probe"]["login"])
    assert_imap_refused(stack, "imaps", "XOAUTH2", stack["users"]["other"]["login"], token)
    assert imap_login(stack, "imaps", "XOAUTH2", stack["users"]["probe"]["login"], token)[0].startswith("OK")


def test_login_name_forms(stack: Dict[str, Any], idp: Any) -> None:
    """Login names compare without case and take the default domain; wildcards and lists (which
    the mailbox check's pattern could be fooled by) never reach it: Dovecot refuses them first,
    without a challenge."""
    token = idp.mint(stack["users"]["probe"]["login"])
    for login in ("probe", "PROBE@Roundtrip.Test"):
        assert imap_login(stack, "imaps", "XOAUTH2", login, token)[0].startswith("OK"), login
    for login in ("*@roundtrip.test", "?robe@roundtrip.test", "probe@roundtrip.test,other@roundtrip.test"):
        assert imap_login(stack, "imaps", "XOAUTH2", login, token) == (IMAP_REFUSED, []), login
    assert idp.requests("introspect") == 2


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_app_token_needs_mailbox_permission(stack: Dict[str, Any], idp: Any, mechanism: str) -> None:
    """Client credentials (Microsoft 365 style): one token for the app; a mailbox the app has no
    permission for refuses it like a bad token, on IMAP and SMTP, and takes it once granted."""
    probe, other = stack["users"]["probe"]["login"], stack["users"]["other"]["login"]
    idp.add_client("sensor-app", secret="App-S3cret-1", mailboxes=[probe])
    status, body = post(idp.token_url, stack, grant_type="client_credentials", client_id="sensor-app",
                        client_secret="App-S3cret-1", scope=tokenservice.MAIL_SCOPE + ".default")
    assert status == 200, body
    token = body["access_token"]
    assert imap_login(stack, "imaps", mechanism, probe, token)[0].startswith("OK")
    assert smtp_login(stack, "submission", mechanism, probe, token)[0][0] == 235
    assert_imap_refused(stack, "imaps", mechanism, other, token)
    assert_smtp_refused(stack, "submission", mechanism, other, token)
    idp.grant_mailbox("sensor-app", other)
    assert imap_login(stack, "imaps", mechanism, other, token)[0].startswith("OK")


def test_token_service_down(stack: Dict[str, Any], idp: Any) -> None:
    """Introspection answers 503: IMAP says NO [UNAVAILABLE] (no challenge), SMTP its usual 535.

    IMAP: ``NO [UNAVAILABLE] Temporary authentication failure. [HOST:YYYY-MM-DD HH:MM:SS]``.
    SMTP: ``535 5.7.8 Error: authentication failed: (reason unavailable)``, no 334 first.
    """
    user = oauth_user(stack)
    token = idp.mint(user)
    idp.set_down(True)
    for mechanism in MECHANISMS:
        answer, challenges = imap_login(stack, "imaps", mechanism, user, token)
        assert answer.startswith(IMAP_UNAVAILABLE + " ["), answer
        assert challenges == []
        assert smtp_login(stack, "submission", mechanism, user, token) == (SMTP_REFUSED, [])
    idp.set_down(False)
    assert imap_login(stack, "imaps", "XOAUTH2", user, token)[0].startswith("OK")


def test_token_service_unreachable(stack: Dict[str, Any], idp: Any) -> None:
    """Nothing listens at the introspection URL: the same answers as a service that is down."""
    user = oauth_user(stack)
    token = idp.mint(user)
    assert imap_login(stack, "imaps", "XOAUTH2", user, token)[0].startswith("OK")  # Dovecot connected
    idp.stop()
    try:
        answer, challenges = imap_login(stack, "imaps", "OAUTHBEARER", user, token)
        assert answer.startswith(IMAP_UNAVAILABLE + " ["), answer
        assert challenges == []
        assert smtp_login(stack, "smtps", "XOAUTH2", user, token) == (SMTP_REFUSED, [])
    finally:
        idp.start()
    assert imap_login(stack, "imaps", "XOAUTH2", user, token)[0].startswith("OK")


def test_every_login_is_introspected(stack: Dict[str, Any], idp: Any) -> None:
    """No cache anywhere: three logins with one token, three introspections."""
    user = oauth_user(stack)
    token = idp.mint(user)
    for port_name in ("imaps", "imap_starttls"):
        assert imap_login(stack, port_name, "XOAUTH2", user, token)[0].startswith("OK")
    assert smtp_login(stack, "smtps", "OAUTHBEARER", user, token)[0][0] == 235
    assert idp.requests("introspect") == 3
    assert [entry["active"] for entry in idp.history("introspect")] == [True, True, True]


# ---- passwords are as before ------------------------------------------------------------------


def test_password_logins_never_ask_the_token_service(stack: Dict[str, Any], idp: Any) -> None:
    """With the token service down, passwords still work and a wrong one is an ordinary refusal."""
    idp.set_down(True)
    imap_session(stack).logout()
    where = stack["ports"]["imap_plain"]
    client = imaplib.IMAP4(where["host"], where["port"], timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.login(stack["users"]["probe"]["login"], "wrong-password")
    client.shutdown()
    smtp = smtp_connect(stack, "submission")
    try:
        smtp.login(stack["users"]["sender"]["login"], stack["users"]["sender"]["password"])
    finally:
        smtp.close()
    assert idp.requests("introspect") == 0


def test_oauth_mailbox_has_no_password(stack: Dict[str, Any], idp: Any) -> None:
    where = stack["ports"]["imap_plain"]
    for password in ("", "x", idp.mint(oauth_user(stack))):
        client = imaplib.IMAP4(where["host"], where["port"], timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|BAD"):
            client.login(oauth_user(stack), password)
        client.shutdown()
    assert idp.requests("introspect") == 0


# ---- the token endpoint over HTTP ------------------------------------------------------------


def post(url: str, stack: Dict[str, Any], basic: Optional[Tuple[str, str]] = None,
         timeout: float = 10, **form: Any) -> Tuple[int, Dict[str, Any]]:
    """POST a form; (status, JSON body), also for error statuses."""
    request = urllib.request.Request(url, urllib.parse.urlencode(form).encode(), method="POST")  # noqa: S310 - https
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if basic:
        pair = f"{urllib.parse.quote_plus(basic[0])}:{urllib.parse.quote_plus(basic[1])}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    try:
        with urllib.request.urlopen(request, context=tls_context(stack), timeout=timeout) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        if error.headers.get("WWW-Authenticate"):
            body["_www_authenticate"] = error.headers["WWW-Authenticate"]
        return error.code, body


def test_client_credentials_grant(stack: Dict[str, Any], idp: Any) -> None:
    idp.add_client("app", secret="S3cret+/=&x", scope=f"{tokenservice.MAIL_SCOPE} openid", mailboxes=["a@b"])
    auths: List[Dict[str, Any]] = [
        {"basic": ("app", "S3cret+/=&x")},  # RFC 6749 2.3.1: form-encoded, then Basic
        {"client_id": "app", "client_secret": "S3cret+/=&x"},
    ]
    for auth in auths:
        status, body = post(idp.token_url, stack, grant_type="client_credentials", **auth)
        assert status == 200, body
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert body["token_type"] == "Bearer" and body["access_token"].startswith("rtAT-")
        assert 3590 <= body["expires_in"] <= 3600
        assert body["scope"] == f"{tokenservice.MAIL_SCOPE} openid"
    status, body = post(idp.token_url, stack, grant_type="client_credentials", client_id="app",
                        client_secret="S3cret+/=&x", scope=tokenservice.MAIL_SCOPE)
    assert (status, body["scope"]) == (200, tokenservice.MAIL_SCOPE)
    status, body = post(idp.token_url, stack, grant_type="client_credentials", client_id="app",
                        client_secret="S3cret+/=&x", scope="https://graph.example/Mail.Read")
    assert (status, body["error"]) == (400, "invalid_scope")
    assert idp.requests("token") == 4


def test_client_authentication_errors(stack: Dict[str, Any], idp: Any) -> None:
    idp.add_client("app", secret="right")
    cases: List[Tuple[Dict[str, Any], Optional[str]]] = [
        ({"basic": ("app", "wrong")}, 'Basic realm="roundtrip.test"'),
        ({"client_id": "app", "client_secret": "wrong"}, None),
        ({"client_id": "app"}, None),
        ({"client_id": "nobody", "client_secret": "right"}, None),
        ({}, None),
    ]
    for auth, challenge in cases:
        status, body = post(idp.token_url, stack, grant_type="client_credentials", **auth)
        assert (status, body["error"]) == (401, "invalid_client"), (auth, body)
        assert body["error_description"]
        assert body.get("_www_authenticate") == challenge
    status, body = post(idp.token_url, stack, grant_type="password", client_id="app", client_secret="right")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body = post(idp.token_url, stack, client_id="app", client_secret="right")
    assert (status, body["error"]) == (400, "invalid_request")


@pytest.mark.skipif(not tokenservice.HAVE_CRYPTOGRAPHY, reason="needs cryptography to sign")
@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_client_assertion_with_certificate(stack: Dict[str, Any], idp: Any, alg: str) -> None:
    """Microsoft's recommended credential: a JWT signed with the app certificate's key."""
    cert, key = tokenservice.make_client_certificate("cert-app")
    _, other_key = tokenservice.make_client_certificate("cert-app")
    idp.add_client("cert-app", certificate_pem=cert, mailboxes=[oauth_user(stack)])
    endpoint = idp.url + "/tenant-1/oauth2/v2.0/token"  # Microsoft's layout works as well as /token
    now = int(time.time())

    def assertion(key_pem: str = key, **claims: Any) -> Dict[str, Any]:
        body = {"iss": "cert-app", "sub": "cert-app", "aud": endpoint, "iat": now, "nbf": now,
                "exp": now + 600, "jti": f"{time.time_ns()}", **claims}
        headers = {"x5t": tokenservice.certificate_thumbprint(cert)}
        return {"client_assertion_type": tokenservice.CLIENT_ASSERTION_TYPE,
                "client_assertion": tokenservice.sign_jwt(body, key_pem, alg, headers)}

    status, body = post(endpoint, stack, grant_type="client_credentials", client_id="cert-app",
                        scope=tokenservice.MAIL_SCOPE + ".default", **assertion())
    assert status == 200, body
    assert imap_login(stack, "imaps", "XOAUTH2", oauth_user(stack), body["access_token"])[0].startswith("OK")
    for bad in (assertion(other_key), assertion(aud=idp.token_url), assertion(exp=now - 3600, iat=now - 4000),
                assertion(sub="someone-else")):
        status, body = post(endpoint, stack, grant_type="client_credentials", **bad)
        assert (status, body["error"]) == (401, "invalid_client"), body


def test_refresh_token_rotation(stack: Dict[str, Any], idp: Any) -> None:
    """Rotation on (default): every refresh returns a new refresh token and kills the old one."""
    user = oauth_user(stack)
    idp.add_client("desktop", secret="Desk-S3cret")
    first = idp.issue_refresh_token("desktop", user)
    auth: Dict[str, Any] = {"client_id": "desktop", "client_secret": "Desk-S3cret"}
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=first, **auth)
    assert status == 200, body
    second = body["refresh_token"]
    assert second.startswith("rtRT-") and second != first
    assert imap_login(stack, "imaps", "OAUTHBEARER", user, body["access_token"])[0].startswith("OK")
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=first, **auth)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=second, **auth)
    assert status == 200 and body["refresh_token"] not in (first, second)

    idp.rotate_refresh_tokens(False)  # Google style: no new refresh token, the old one stays
    third = body["refresh_token"]
    for _ in range(2):
        status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=third, **auth)
        assert status == 200 and "refresh_token" not in body


def test_refresh_token_errors(stack: Dict[str, Any], idp: Any) -> None:
    user = oauth_user(stack)
    idp.add_client("desktop", secret="Desk-S3cret")
    idp.add_client("intruder", secret="Intr-S3cret")
    token = idp.issue_refresh_token("desktop", user)
    auth: Dict[str, Any] = {"client_id": "desktop", "client_secret": "Desk-S3cret"}
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=token,
                        client_id="intruder", client_secret="Intr-S3cret")
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=token,
                        scope=f"{tokenservice.MAIL_SCOPE} admin", **auth)
    assert (status, body["error"]) == (400, "invalid_scope")
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token="rtRT-nope", **auth)
    assert (status, body["error"]) == (400, "invalid_grant")
    idp.revoke(token)
    status, body = post(idp.token_url, stack, grant_type="refresh_token", refresh_token=token, **auth)
    assert (status, body["error"]) == (400, "invalid_grant")


@pytest.mark.skipif(not tokenservice.HAVE_CRYPTOGRAPHY, reason="needs cryptography to sign")
def test_service_account_jwt_bearer(stack: Dict[str, Any], idp: Any) -> None:
    """Google: a service account with domain-wide delegation acts as the mailbox's user."""
    user = oauth_user(stack)
    key = idp.add_service_account()
    assert key["type"] == "service_account" and key["token_uri"] == idp.token_url
    now = int(time.time())

    def assertion(key_pem: str = key["private_key"], **claims: Any) -> str:
        body = {"iss": key["client_email"], "sub": user, "scope": tokenservice.MAIL_SCOPE,
                "aud": key["token_uri"], "iat": now, "exp": now + 3600, **claims}
        return str(tokenservice.sign_jwt(body, key_pem, headers={"kid": key["private_key_id"]}))

    status, body = post(idp.token_url, stack, grant_type=tokenservice.JWT_BEARER_GRANT, assertion=assertion())
    assert status == 200, body
    assert "refresh_token" not in body
    assert imap_login(stack, "imaps", "XOAUTH2", user, body["access_token"])[0].startswith("OK")

    other_key = idp.add_service_account()["private_key"]
    for bad, error in ((assertion(other_key), "invalid_grant"), (assertion(aud=idp.url), "invalid_grant"),
                       (assertion(exp=now + 7200), "invalid_grant"),
                       (assertion(scope="https://www.googleapis.com/auth/drive"), "unauthorized_client")):
        status, body = post(idp.token_url, stack, grant_type=tokenservice.JWT_BEARER_GRANT, assertion=bad)
        assert (status, body["error"]) == (400, error), body
    status, body = post(idp.token_url, stack, grant_type=tokenservice.JWT_BEARER_GRANT, assertion=assertion(other_key))
    assert body["error_description"] == "Invalid JWT Signature."


def test_token_endpoint_down_and_hanging(stack: Dict[str, Any], idp: Any) -> None:
    idp.add_client("app", secret="S")
    idp.set_down(True)
    status, body = post(idp.token_url, stack, grant_type="client_credentials", client_id="app", client_secret="S")
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    idp.set_down(False)
    idp.set_hang(30)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        post(idp.token_url, stack, timeout=0.5, grant_type="client_credentials", client_id="app", client_secret="S")
    assert idp.requests("token") == 2
    idp.set_hang(0)  # lets the held request go
    status, _ = post(idp.token_url, stack, grant_type="client_credentials", client_id="app", client_secret="S")
    assert status == 200


def test_tokens_are_opaque_and_listed_as_secrets(idp: Any) -> None:
    idp.add_client("app", secret="Listed-S3cret")
    minted = [idp.mint("a@roundtrip.test") for _ in range(3)]
    refresh = idp.issue_refresh_token("app", "a@roundtrip.test")
    assert len(set(minted)) == 3
    assert all(t.startswith("rtAT-") and len(t) > 40 and "." not in t for t in minted)
    assert set(idp.secrets()) >= {*minted, refresh, "Listed-S3cret"}


def test_control_helpers(stack: Dict[str, Any], idp: Any) -> None:
    """mint_app, tokens(), is_active, set_lifetime: what sensor tests use to stage a cache."""
    probe = stack["users"]["probe"]["login"]
    idp.add_client("app", secret="S", mailboxes=[probe])
    app_token = idp.mint_app("app")
    assert imap_login(stack, "imaps", "XOAUTH2", probe, app_token)[0].startswith("OK")
    idp.set_lifetime(5)
    status, body = post(idp.token_url, stack, grant_type="client_credentials", client_id="app", client_secret="S")
    assert status == 200 and 4 <= body["expires_in"] <= 5
    assert idp.tokens("access") == [app_token, body["access_token"]]
    assert idp.is_active(body["access_token"])
    idp.revoke(body["access_token"])
    assert not idp.is_active(body["access_token"]) and idp.is_active(app_token)
    assert [entry["auth"] for entry in idp.history("token")] == ["form"]


def test_discovery_document_for_msal(stack: Dict[str, Any], idp: Any) -> None:
    url = idp.url + "/tenant-1/v2.0/.well-known/openid-configuration"
    with urllib.request.urlopen(url, context=tls_context(stack), timeout=10) as answer:  # noqa: S310
        document = json.loads(answer.read())
    assert document["token_endpoint"] == idp.url + "/tenant-1/oauth2/v2.0/token"
    assert document["authorization_endpoint"]


def test_claims_only_without_cryptography(stack: Dict[str, Any], idp: Any, monkeypatch: Any) -> None:
    """Without the cryptography package: keys come from openssl, signatures are not checked, the
    claims still are."""
    monkeypatch.setattr(tokenservice, "HAVE_CRYPTOGRAPHY", False)
    key = idp.add_service_account()
    assert "PRIVATE KEY" in key["private_key"]
    now = int(time.time())
    claims = {"iss": key["client_email"], "sub": oauth_user(stack), "scope": tokenservice.MAIL_SCOPE,
              "aud": key["token_uri"], "iat": now, "exp": now + 600}

    def unsigned(**changes: Any) -> str:
        parts = [{"alg": "RS256", "typ": "JWT"}, {**claims, **changes}]
        encoded = [base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode() for part in parts]
        return ".".join([*encoded, "bm90LWEtc2lnbmF0dXJl"])

    status, body = post(idp.token_url, stack, grant_type=tokenservice.JWT_BEARER_GRANT, assertion=unsigned())
    assert status == 200, body
    status, body = post(idp.token_url, stack, grant_type=tokenservice.JWT_BEARER_GRANT,
                        assertion=unsigned(aud=idp.url))
    assert (status, body["error"]) == (400, "invalid_grant")


def test_runs_as_a_script(stack: Dict[str, Any], tmp_path: Any) -> None:
    """python3 tools/tokenservice.py: prints its URLs and minted tokens as JSON, then serves."""
    script = Path(tokenservice.__file__)
    process = subprocess.Popen(
        [sys.executable, str(script), "--client", "app:S3cret:probe@roundtrip.test", "--mint", "probe@roundtrip.test",
         "--cert", stack["oauth2"]["server_cert"], "--key", stack["oauth2"]["server_key"]],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                break
        printed = json.loads("".join(lines))
        assert printed["token_url"].startswith("https://127.0.0.1:") and printed["token_url"].endswith("/token")
        assert printed["tokens"]["probe@roundtrip.test"].startswith("rtAT-")
        status, body = post(printed["token_url"], stack, grant_type="client_credentials", client_id="app",
                            client_secret="S3cret")
        assert status == 200, body
    finally:
        process.terminate()
        process.wait(10)

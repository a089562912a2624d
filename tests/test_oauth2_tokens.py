"""The token step (prtg_roundtrip/oauth2/) against a real local OAuth2 token endpoint.

tools/tokenservice.py is a real OAuth2 authorization server on loopback (client credentials with
secrets and JWT client assertions, refresh tokens with rotation, Google's JWT bearer grant, error
answers, set_down / set_hang, request counters). Every flow here talks to it over HTTP(S).

How the providers' libraries are tested:
- MSAL: for real, against the token service over HTTPS (the test CA in an SSLContext): MSAL's
  `http_client` is the sensor's own HTTP layer, which answers MSAL's tenant discovery itself and
  posts to the token URL override, so MSAL builds the request (and for certificates signs the
  client assertion with x5t#S256) and the token service checks it.
- google-auth: for real, against the token service: the key JSON's `token_uri` (and the
  assertion's audience) is the token service, and google-auth's transport Request is the
  sensor's HTTP layer; the service verifies the RS256 signature with the account's public key.
Both are skipped with a reason when the library is not installed; the standard-library and
`cryptography` fallbacks are tested by making the library look absent.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from conftest import mailstack, tokenservice

from prtg_roundtrip import oauth2
from prtg_roundtrip.auth import OAuth2Client, Provider, SecretValue, TokenSource
from prtg_roundtrip.deadline import Deadline
from prtg_roundtrip.errors import TokenError
from prtg_roundtrip.oauth2 import grants, libraries
from prtg_roundtrip.oauth2.cache import TokenCache, margin, usable
from prtg_roundtrip.transcript import Transcript

ROOT = Path(__file__).resolve().parent.parent
MAIL_SCOPE = tokenservice.MAIL_SCOPE
USER = "probe@roundtrip.test"
OTHER = "other@roundtrip.test"
SECRET = "s3cret-Client-Value-42"

try:
    import msal  # noqa: F401

    HAVE_MSAL = True
except ImportError:  # pragma: no cover
    HAVE_MSAL = False
try:
    import google.oauth2.service_account  # noqa: F401

    HAVE_GOOGLE_AUTH = True
except ImportError:  # pragma: no cover
    HAVE_GOOGLE_AUTH = False


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_service() -> Iterator[Any]:
    with tokenservice.TokenService() as service:
        yield service


@pytest.fixture
def idp(plain_service: Any) -> Any:
    """The token service on http://127.0.0.1 (loopback), fresh for each test, with client 'app'."""
    plain_service.reset()
    plain_service.add_client("app", secret=SECRET, mailboxes=[USER])
    return plain_service


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    mailstack.make_ca(folder)
    cert = mailstack.issue_certificate(folder, "server")
    return {"ca": str(folder / "ca.pem"), "cert": str(cert), "key": str(folder / "server.key")}


@pytest.fixture(scope="module")
def tls_service(tls_files: Dict[str, str]) -> Iterator[Any]:
    with tokenservice.TokenService(certfile=tls_files["cert"], keyfile=tls_files["key"]) as service:
        yield service


@pytest.fixture
def tls_idp(tls_service: Any) -> Any:
    tls_service.reset()
    tls_service.add_client("app", secret=SECRET, mailboxes=[USER])
    return tls_service


@pytest.fixture
def context(tls_files: Dict[str, str]) -> Any:
    import ssl

    ctx = ssl.create_default_context(cafile=tls_files["ca"])
    return ctx


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return {"PRTG_RT_STATE_DIR": str(state)}


def generic(service: Any, *, secret: str = SECRET, scope: Optional[str] = MAIL_SCOPE,
            refresh: Optional[SecretValue] = None, user: str = USER, key: str = "sensor-1") -> TokenSource:
    client = OAuth2Client(Provider.GENERIC, client_id="app", client_secret=SecretValue(secret, "env:CS"),
                          token_url=service.token_url, scope=scope)
    return TokenSource(user, client, refresh_token=refresh, cache_key=key)


def microsoft(service: Any, *, secret: Optional[str] = SECRET, certificate: Optional[str] = None,
              client_id: str = "app", user: str = USER, tenant: str = "contoso") -> TokenSource:
    client = OAuth2Client(
        Provider.MICROSOFT365, client_id=client_id, tenant=tenant, certificate=certificate,
        client_secret=SecretValue(secret) if secret else None,
        token_url=f"{service.url}/{tenant}/oauth2/v2.0/token",
    )
    return TokenSource(user, client, cache_key="sensor-1")  # as auth_settings keys it: the sensor


def budget(seconds: float = 20.0) -> Deadline:
    return Deadline(seconds)


def failure(source: TokenSource, env: Dict[str, str], seconds: float = 20.0, **kwargs: Any) -> TokenError:
    with pytest.raises(TokenError) as caught:
        oauth2.get_token(source, budget(seconds), env, **kwargs)
    return caught.value


def assert_no_secret(service: Any, *texts: str) -> None:
    known = [*service.secrets(), SECRET]
    for text in texts:
        for secret in known:
            assert secret not in text


def jwt_header(assertion: str) -> Dict[str, Any]:
    head = assertion.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


# ---- client credentials, the cache ------------------------------------------------------------------


def test_client_credentials_fetched_once_then_cached(idp: Any, env: Dict[str, str]) -> None:
    transcript = Transcript()
    first = oauth2.get_token(generic(idp), budget(), env, transcript=transcript)
    assert first.fetched and first.elapsed > 0
    assert idp.is_active(first.value)
    assert abs(first.expires_at - (time.time() + 3600)) < 60
    assert idp.requests("token") == 1
    second = oauth2.get_token(generic(idp), budget(), env, transcript=transcript)
    assert second.value == first.value
    assert not second.fetched and second.elapsed == 0.0
    assert idp.requests("token") == 1  # a valid cached token costs no request
    text = transcript.text()
    assert "token: fetched from 127.0.0.1 in" in text
    assert "token: cached (expires in 60 min)" in text
    assert_no_secret(idp, text)
    assert idp.history("token")[0]["form"]["grant_type"] == "client_credentials"


def test_cache_file_private_and_symlink_refused(idp: Any, env: Dict[str, str], tmp_path: Path) -> None:
    source = generic(idp)
    oauth2.get_token(source, budget(), env)
    files = sorted(Path(env["PRTG_RT_STATE_DIR"]).rglob("oauth2-*"))
    assert files, "no cache file written"
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    folder = files[0].parent
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
    entry_file = next(p for p in files if p.suffix == ".json")
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"access_token": "planted-token", "expires_at": time.time() + 3000,
                                   "obtained_at": time.time()}))
    entry_file.unlink()
    entry_file.symlink_to(planted)
    error = failure(source, env)
    assert "token cache file is refused" in error.message() and "is a link" in error.message()
    assert "planted-token" not in error.message()


def test_cache_key_separates_sources(idp: Any, env: Dict[str, str]) -> None:
    oauth2.get_token(generic(idp, key="sensor-1"), budget(), env)
    oauth2.get_token(generic(idp, key="sensor-2"), budget(), env)
    assert idp.requests("token") == 2


def test_margin_rules() -> None:
    assert margin(3600) == 300  # five minutes for ordinary tokens
    assert margin(600) == pytest.approx(60)  # 10 % of the lifetime for short-lived ones
    now = 1_000_000.0
    hour = {"access_token": "x", "obtained_at": now - 3000, "expires_at": now + 600}
    assert usable(hour, now)
    assert not usable({**hour, "obtained_at": now - 3301, "expires_at": now + 299}, now)
    short = {"access_token": "x", "obtained_at": now - 500, "expires_at": now + 100}
    assert usable(short, now)
    assert not usable({**short, "obtained_at": now - 541, "expires_at": now + 59}, now)


def _age_cache(env: Dict[str, str], left: float, lifetime: float = 3600) -> None:
    for path in Path(env["PRTG_RT_STATE_DIR"]).rglob("oauth2-*.json"):
        entry = json.loads(path.read_text())
        entry["expires_at"] = time.time() + left
        entry["obtained_at"] = entry["expires_at"] - lifetime
        path.write_text(json.dumps(entry))


def test_token_expiring_within_margin_is_fetched_again(idp: Any, env: Dict[str, str]) -> None:
    first = oauth2.get_token(generic(idp), budget(), env)
    _age_cache(env, left=400)  # more than 5 minutes left: still used
    assert oauth2.get_token(generic(idp), budget(), env).value == first.value
    assert idp.requests("token") == 1
    _age_cache(env, left=200)  # less than 5 minutes left: fetched anew
    again = oauth2.get_token(generic(idp), budget(), env)
    assert again.fetched and again.value != first.value
    assert idp.requests("token") == 2


def test_refresh_true_drops_the_cached_token(idp: Any, env: Dict[str, str]) -> None:
    first = oauth2.get_token(generic(idp), budget(), env)
    idp.revoke(first.value)  # the mail server would refuse it now
    second = oauth2.get_token(generic(idp), budget(), env, refresh=True)
    assert second.fetched and second.value != first.value
    assert idp.requests("token") == 2
    third = oauth2.get_token(generic(idp), budget(), env)
    assert third.value == second.value and not third.fetched


def test_refused_token_dropped_even_when_the_new_fetch_fails(idp: Any, env: Dict[str, str]) -> None:
    first = oauth2.get_token(generic(idp), budget(), env)
    idp.set_down(True)
    try:
        failure(generic(idp), env, refresh=True)
    finally:
        idp.set_down(False)
    later = oauth2.get_token(generic(idp), budget(), env)  # the next run: not the refused token
    assert later.fetched and later.value != first.value
    assert idp.requests("token") == 3


def test_refresh_true_takes_a_token_another_run_just_fetched(idp: Any, env: Dict[str, str]) -> None:
    first = oauth2.get_token(generic(idp), budget(), env)
    # Another run (another process: its own memory) refreshed meanwhile and wrote the cache.
    path = next(Path(env["PRTG_RT_STATE_DIR"]).rglob("oauth2-*.json"))
    newer = idp.mint_app("app")
    entry = json.loads(path.read_text())
    entry["access_token"] = newer
    path.write_text(json.dumps(entry))
    second = oauth2.get_token(generic(idp), budget(), env, refresh=True)
    assert second.value == newer and second.value != first.value
    assert idp.requests("token") == 1


# ---- refresh tokens and rotation ------------------------------------------------------------------


def test_refresh_grant_rotation_written_back_to_file(idp: Any, env: Dict[str, str], tmp_path: Path) -> None:
    refresh = idp.issue_refresh_token("app", USER)
    path = tmp_path / "refresh-token"
    path.write_text(refresh + "\n# issued for the round trip sensor\n")
    path.chmod(0o640)
    transcript = Transcript()
    source = generic(idp, refresh=SecretValue(refresh, f"file:{path}"))
    first = oauth2.get_token(source, budget(), env, transcript=transcript)
    assert first.fetched and idp.is_active(first.value)
    assert idp.history("token")[-1]["form"]["grant_type"] == "refresh_token"
    lines = path.read_text().splitlines()
    rotated = lines[0]
    assert rotated != refresh and rotated in idp.tokens("refresh")
    assert lines[1] == "# issued for the round trip sensor"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not idp.is_active(refresh) or refresh not in idp.tokens("refresh")
    # The next run reads the file (the rotated token) and refreshes with it.
    again = oauth2.get_token(generic(idp, refresh=SecretValue(rotated, f"file:{path}")), budget(), env,
                             refresh=True, transcript=transcript)
    assert again.fetched and idp.history("token")[-1]["form"]["refresh_token"] == rotated
    assert idp.history("token")[-1]["status"] == 200
    assert "written back to file:" in transcript.text()
    assert_no_secret(idp, transcript.text())


def test_refresh_grant_rotation_from_env_kept_in_cache(idp: Any, env: Dict[str, str]) -> None:
    configured = idp.issue_refresh_token("app", USER)
    transcript = Transcript()
    source = generic(idp, refresh=SecretValue(configured, "env:PRTG_RT_REFRESH"))
    oauth2.get_token(source, budget(), env, transcript=transcript)
    assert "cannot be written back: it is kept in the token cache" in transcript.text()
    # The configured token is spent; the next fetch must use the rotated one from the cache.
    for _ in range(2):
        token = oauth2.get_token(source, budget(), env, refresh=True, transcript=transcript)
        assert token.fetched
        assert idp.history("token")[-1]["status"] == 200, idp.history("token")[-1]
        assert idp.history("token")[-1]["form"]["refresh_token"] != configured
    # The administrator stores a new refresh token: that one is used, not the cached chain.
    fresh = idp.issue_refresh_token("app", USER)
    oauth2.get_token(generic(idp, refresh=SecretValue(fresh, "env:PRTG_RT_REFRESH")), budget(), env, refresh=True)
    assert idp.history("token")[-1]["form"]["refresh_token"] == fresh
    assert idp.history("token")[-1]["status"] == 200
    assert_no_secret(idp, transcript.text())


def test_refresh_grant_rotation_written_back_to_keyring(idp: Any, env: Dict[str, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    try:
        import file_keyring
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("PRTG_RT_TEST_KEYRING", str(tmp_path / "keyring.json"))
    previous = keyring.get_keyring()
    keyring.set_keyring(file_keyring.FileKeyring())
    try:
        configured = idp.issue_refresh_token("app", USER)
        keyring.set_password("prtg-roundtrip", "refresh", configured)
        source = generic(idp, refresh=SecretValue(configured, "keyring:prtg-roundtrip/refresh"))
        oauth2.get_token(source, budget(), env)
        stored = keyring.get_password("prtg-roundtrip", "refresh")
        assert stored != configured and stored in idp.tokens("refresh")
    finally:
        keyring.set_keyring(previous)


def test_revoked_refresh_token(idp: Any, env: Dict[str, str]) -> None:
    refresh = idp.issue_refresh_token("app", USER)
    idp.revoke(refresh)
    error = failure(generic(idp, refresh=SecretValue(refresh, "env:RT")), env)
    text = error.message()
    assert error.step == "OAuth2 token" and error.server == "127.0.0.1"
    assert "rejected the grant" in text and "invalid_grant" in text
    assert "consent again" in text
    assert_no_secret(idp, text)


# ---- what the identity provider refuses, and what goes wrong on the way ----------------------------


def test_wrong_client_secret(idp: Any, env: Dict[str, str]) -> None:
    error = failure(generic(idp, secret="not-the-secret-123"), env)
    text = error.message()
    assert "the identity provider rejected the client (invalid_client: invalid client secret)" in text
    assert "--oauth2-client-secret" in text
    assert "not-the-secret-123" not in text
    assert_no_secret(idp, text)


def test_wrong_scope(idp: Any, env: Dict[str, str]) -> None:
    error = failure(generic(idp, scope="https://other.example/scope"), env)
    assert "refused the scope (invalid_scope:" in error.message()
    assert "--oauth2-scope" in error.message()


def test_endpoint_down(idp: Any, env: Dict[str, str]) -> None:
    idp.set_down(True)
    error = failure(generic(idp), env)
    assert "temporarily unavailable" in error.message()
    assert error.server == "127.0.0.1"
    idp.set_down(False)
    assert oauth2.get_token(generic(idp), budget(), env).fetched


def test_endpoint_hanging_ends_inside_the_budget(idp: Any, env: Dict[str, str]) -> None:
    idp.set_hang(60)
    started = time.monotonic()
    try:
        error = failure(generic(idp), env, seconds=4)
    finally:
        idp.set_hang(0)
    assert time.monotonic() - started < 4  # the run's budget, not the endpoint, decides
    assert "no answer within 2.5 s" in error.message()


def test_unreachable_port(env: Dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    client = OAuth2Client(Provider.GENERIC, client_id="app", client_secret=SecretValue(SECRET),
                          token_url=f"http://127.0.0.1:{free}/token")
    error = failure(TokenSource(USER, client), env)
    assert "connection refused" in error.message() and error.server == "127.0.0.1"


def test_plain_http_only_on_loopback(env: Dict[str, str]) -> None:
    client = OAuth2Client(Provider.GENERIC, client_id="app", client_secret=SecretValue(SECRET),
                          token_url="http://idp.example.com/token")
    error = failure(TokenSource(USER, client), env)
    assert "plain http://" in error.message() and "only over TLS" in error.message()


class _HtmlHandler(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>Please sign in</body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _html_answer(env: Dict[str, str], status: int) -> TokenError:
    handler = type("Handler", (_HtmlHandler,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = OAuth2Client(Provider.GENERIC, client_id="app", client_secret=SecretValue(SECRET),
                              token_url=f"http://127.0.0.1:{server.server_address[1]}/token")
        return failure(TokenSource(USER, client), env)
    finally:
        server.shutdown()
        server.server_close()


def test_answer_that_is_not_json(env: Dict[str, str]) -> None:
    """A fake: a proxy's login page in place of the token endpoint (the real service never does this)."""
    error = _html_answer(env, 200)
    assert "answered HTTP 200 with text/html, not an OAuth2 JSON answer" in error.message()


def test_server_error_without_json(env: Dict[str, str]) -> None:
    """A fake: a gateway's 502 page in front of the identity provider."""
    error = _html_answer(env, 502)
    assert "the identity provider is unavailable (HTTP 502)" in error.message()


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every token request with an error whose description repeats the request."""

    def do_POST(self) -> None:
        sent = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        body = json.dumps({"error": "invalid_request", "error_description": f"cannot parse {sent}"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_provider_description_is_redacted(env: Dict[str, str]) -> None:
    """A fake: an identity provider that quotes the request (with the secret) in its error."""
    server = HTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secret = "Echoed-Secret-Value-77"
    try:
        client = OAuth2Client(Provider.GENERIC, client_id="app", client_secret=SecretValue(secret),
                              token_url=f"http://127.0.0.1:{server.server_address[1]}/token")
        error = failure(TokenSource(USER, client), env)
    finally:
        server.shutdown()
        server.server_close()
    assert "refused the request as malformed (invalid_request: cannot parse" in error.message()
    assert secret not in error.message() and "client_secret=***" in error.message()


def test_https_certificate_verified(tls_idp: Any, env: Dict[str, str], context: Any) -> None:
    token = oauth2.get_token(generic(tls_idp), budget(), env, context=context)
    assert token.fetched and tls_idp.is_active(token.value)
    # Without the test CA the service's certificate is not trusted: an error, no token request.
    error = failure(generic(tls_idp, key="other"), env)
    assert "certificate is not trusted" in error.message()
    assert tls_idp.requests("token") == 1


def test_lock_wait_ends_inside_the_budget(idp: Any, env: Dict[str, str]) -> None:
    source = generic(idp)
    holder = TokenCache(oauth2._Plan(source, source.client).key(), env)  # type: ignore[arg-type]
    started = time.monotonic()
    with holder.locked(budget()):
        error = failure(source, env, seconds=3.5)
    assert time.monotonic() - started < 3.5
    assert "held the token cache lock" in error.message()
    assert idp.requests("token") == 0


# ---- two runs at once ----------------------------------------------------------------------------

_RUN = """
import json, sys
from prtg_roundtrip import oauth2
from prtg_roundtrip.auth import OAuth2Client, Provider, SecretValue, TokenSource
from prtg_roundtrip.deadline import Deadline
args = json.loads(sys.argv[1])
client = OAuth2Client(Provider.GENERIC, client_id="app", client_secret=SecretValue(args["secret"]),
                      token_url=args["url"])
source = TokenSource(args["user"], client, refresh_token=SecretValue(args["refresh"], "env:RT"), cache_key="s")
token = oauth2.get_token(source, Deadline(20), {"PRTG_RT_STATE_DIR": args["state"]})
print(json.dumps({"token": token.value, "fetched": token.fetched}))
"""


def test_two_processes_share_one_cache_with_rotation(idp: Any, env: Dict[str, str]) -> None:
    configured = idp.issue_refresh_token("app", USER)
    idp.set_hang(1.0)  # the first run is still fetching when the second wants the token
    args = json.dumps({"secret": SECRET, "url": idp.token_url, "user": USER, "refresh": configured,
                       "state": env["PRTG_RT_STATE_DIR"]})
    procs = [subprocess.Popen([sys.executable, "-c", _RUN, args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=str(ROOT)) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    idp.set_hang(0)
    assert idp.requests("token") == 1  # one run fetched, the other waited and read the cache
    assert results[0]["token"] == results[1]["token"]
    assert sorted(r["fetched"] for r in results) == [False, True]
    # The rotated refresh token is not lost: a later refresh works with it.
    source = generic(idp, refresh=SecretValue(configured, "env:RT"), key="s", scope=None)
    later = oauth2.get_token(source, budget(), env, refresh=True)
    assert later.fetched and idp.history("token")[-1]["status"] == 200


# ---- the token command ----------------------------------------------------------------------------


def command_source(command: str) -> TokenSource:
    return TokenSource(USER, command=command)


def test_token_command(env: Dict[str, str], tmp_path: Path) -> None:
    helper = tmp_path / "token helper.sh"
    helper.write_text("#!/bin/sh\necho \"token-for-$1\"\necho second line\n")
    helper.chmod(0o700)
    transcript = Transcript()
    token = oauth2.get_token(command_source(f"'{helper}' probe"), budget(), env, transcript=transcript)
    assert token.value == "token-for-probe" and token.fetched
    assert "token: from the command token helper.sh in" in transcript.text()
    assert "token-for-probe" not in transcript.text()


def test_token_command_failing(env: Dict[str, str]) -> None:
    leak = "leaked-client-secret-999"
    from prtg_roundtrip.secrets import register

    register(leak)
    error = failure(command_source(f"sh -c 'echo partial-token; echo \"refused: {leak}\" >&2; exit 3'"), env)
    text = error.message()
    assert "the token command sh failed with exit code 3: refused: ***" in text
    assert leak not in text and "partial-token" not in text


def test_token_command_empty_output(env: Dict[str, str]) -> None:
    error = failure(command_source("sh -c 'echo nothing to say >&2'"), env)
    assert "printed no token: nothing to say" in error.message()


def test_token_command_not_found(env: Dict[str, str]) -> None:
    error = failure(command_source("/nonexistent/helper --flag"), env)
    assert "the token command helper was not found" in error.message()


def test_token_command_timeout_kills_it(env: Dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    started = time.monotonic()
    # The helper's own child (in the background) would touch the marker after 3 s.
    error = failure(command_source(f"sh -c '(sleep 3; touch {marker}) & sleep 20'"), env, seconds=3.5)
    assert time.monotonic() - started < 3.5
    assert "did not finish within 2.0 s" in error.message()
    time.sleep(2.0)
    assert not marker.exists()  # the whole process group was ended, not only the shell


# ---- Microsoft 365 -----------------------------------------------------------------------------


def _cert_file(service: Any, tmp_path: Path, client_id: str = "cert-app") -> str:
    certificate, key = tokenservice.make_client_certificate(client_id)
    service.add_client(client_id, certificate_pem=certificate, mailboxes=[USER])
    path = tmp_path / "app.pem"
    path.write_text(key + certificate)
    path.chmod(0o600)
    return str(path)


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> List[int]:
    calls: List[int] = []
    real = getattr(libraries, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(libraries, name, wrapper)
    return calls


@pytest.mark.skipif(not HAVE_MSAL, reason="MSAL is not installed (pip install prtg-roundtrip[microsoft])")
def test_microsoft_secret_with_msal(tls_idp: Any, env: Dict[str, str], context: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "msal_client_credentials")
    token = oauth2.get_token(microsoft(tls_idp), budget(), env, context=context)
    assert calls and token.fetched and tls_idp.is_active(token.value)
    sent = tls_idp.history("token")[-1]
    assert sent["path"] == "/contoso/oauth2/v2.0/token"
    assert sent["form"]["scope"].split()[0] == "https://outlook.office365.com/.default"
    assert tls_idp.requests("discovery") == 0  # MSAL's tenant discovery is answered locally


@pytest.mark.skipif(not HAVE_MSAL, reason="MSAL is not installed (pip install prtg-roundtrip[microsoft])")
def test_microsoft_wrong_secret_with_msal(tls_idp: Any, env: Dict[str, str], context: Any) -> None:
    error = failure(microsoft(tls_idp, secret="wrong-secret-value"), env, context=context)
    text = error.message()
    assert "rejected the client (invalid_client: invalid client secret)" in text
    assert "Entra admin center" in text and "wrong-secret-value" not in text


@pytest.mark.skipif(not HAVE_MSAL, reason="MSAL is not installed (pip install prtg-roundtrip[microsoft])")
def test_microsoft_certificate_with_msal(tls_idp: Any, env: Dict[str, str], context: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "msal_client_credentials")
    # MSAL writes x5t / x5t#S256 as base64url with '=' padding (Entra ID accepts that, and so does
    # the token service).
    source = microsoft(tls_idp, secret=None, certificate=_cert_file(tls_idp, tmp_path), client_id="cert-app")
    transcript = Transcript()
    token = oauth2.get_token(source, budget(), env, context=context, transcript=transcript)
    assert calls and tls_idp.is_active(token.value)
    sent = tls_idp.history("token")[-1]
    assert sent["auth"] == "assertion"
    assert "x5t#S256" in jwt_header(sent["form"]["client_assertion"])
    assert sent["form"]["client_assertion"] not in transcript.text()


def test_microsoft_secret_without_msal(idp: Any, env: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "msal_available", lambda: False)
    token = oauth2.get_token(microsoft(idp), budget(), env)
    assert idp.is_active(token.value)
    assert idp.history("token")[-1]["form"]["grant_type"] == "client_credentials"


def test_microsoft_certificate_without_msal(idp: Any, env: Dict[str, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "msal_available", lambda: False)
    source = microsoft(idp, secret=None, certificate=_cert_file(idp, tmp_path), client_id="cert-app")
    token = oauth2.get_token(source, budget(), env)
    assert idp.is_active(token.value)
    header = jwt_header(idp.history("token")[-1]["form"]["client_assertion"])
    assert header["alg"] == "RS256" and "x5t" in header and "x5t#S256" in header


def test_microsoft_certificate_needs_a_signing_library(idp: Any, env: Dict[str, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "msal_available", lambda: False)
    monkeypatch.setattr(grants, "have_cryptography", lambda: False)
    source = microsoft(idp, secret=None, certificate=_cert_file(idp, tmp_path), client_id="cert-app")
    error = failure(source, env)
    assert "pip install prtg-roundtrip[microsoft]" in error.message()
    assert idp.requests("token") == 0


def test_microsoft_app_token_shared_by_both_legs(idp: Any, env: Dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "msal_available", lambda: False)
    imap = oauth2.get_token(microsoft(idp, user=USER), budget(), env)
    smtp = oauth2.get_token(microsoft(idp, user=OTHER), budget(), env)
    assert smtp.value == imap.value and not smtp.fetched
    assert idp.requests("token") == 1


# ---- Google --------------------------------------------------------------------------------------


def google_source(service: Any, key: Dict[str, str], user: str = USER, *, by_file: Optional[Path] = None
                  ) -> TokenSource:
    text = json.dumps(key, indent=2)
    reference = None
    if by_file is not None:
        by_file.write_text(text)
        reference, text = f"file:{by_file}", text.splitlines()[0]  # what secrets.resolve gives: line 1
    client = OAuth2Client(Provider.GOOGLE, service_account=SecretValue(text, reference))
    return TokenSource(user, client, cache_key="sensor-1")  # as auth_settings keys it: the sensor


@pytest.mark.skipif(not HAVE_GOOGLE_AUTH, reason="google-auth is not installed (pip install prtg-roundtrip[google])")
def test_google_service_account_with_google_auth(idp: Any, env: Dict[str, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "google_service_account")
    key = idp.add_service_account(scope="https://mail.google.com/")
    token = oauth2.get_token(google_source(idp, key, by_file=tmp_path / "key.json"), budget(), env)
    assert calls and token.value in idp.tokens("access", user=USER)  # delegated: the leg's user
    sent = idp.history("token")[-1]
    assert sent["form"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    other = oauth2.get_token(google_source(idp, key, OTHER), budget(), env)
    assert other.value in idp.tokens("access", user=OTHER)


@pytest.mark.skipif(not HAVE_GOOGLE_AUTH, reason="google-auth is not installed (pip install prtg-roundtrip[google])")
def test_google_delegation_missing_with_google_auth(idp: Any, env: Dict[str, str]) -> None:
    key = idp.add_service_account(scope=MAIL_SCOPE)  # delegated another scope than mail.google.com
    error = failure(google_source(idp, key), env)
    text = error.message()
    assert "unauthorized_client" in text and "Domain-wide delegation" in text
    assert_no_secret(idp, text)
    assert key["private_key"] not in text


def test_google_service_account_without_google_auth(idp: Any, env: Dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libraries, "google_auth_available", lambda: False)
    key = idp.add_service_account(scope="https://mail.google.com/")
    token = oauth2.get_token(google_source(idp, key), budget(), env)
    assert token.value in idp.tokens("access", user=USER)
    assert idp.history("token")[-1]["status"] == 200


def test_google_refresh_token_without_rotation(idp: Any, env: Dict[str, str]) -> None:
    idp.rotate_refresh_tokens(False)  # Google keeps refresh tokens
    refresh = idp.issue_refresh_token("app", USER)
    client = OAuth2Client(Provider.GOOGLE, client_id="app", client_secret=SecretValue(SECRET),
                          token_url=idp.token_url)
    source = TokenSource(USER, client, refresh_token=SecretValue(refresh, "env:RT"))
    first = oauth2.get_token(source, budget(), env)
    second = oauth2.get_token(source, budget(), env, refresh=True)
    assert first.value != second.value and idp.is_active(second.value)
    assert [h["form"]["refresh_token"] for h in idp.history("token")] == [refresh, refresh]


# ---- secrets ---------------------------------------------------------------------------------------


def test_no_secret_in_any_transcript_or_error(idp: Any, env: Dict[str, str], tmp_path: Path) -> None:
    transcript = Transcript(echo=None)
    texts: List[str] = []
    refresh = idp.issue_refresh_token("app", USER)
    runs = [
        lambda: oauth2.get_token(generic(idp, refresh=SecretValue(refresh, "env:RT")), budget(), env,
                                 transcript=transcript),
        lambda: oauth2.get_token(generic(idp, refresh=SecretValue(refresh, "env:RT")), budget(), env,
                                 transcript=transcript, refresh=True),
        lambda: oauth2.get_token(generic(idp, secret="bad-" + SECRET, key="x"), budget(), env, transcript=transcript),
        lambda: oauth2.get_token(generic(idp, refresh=SecretValue(refresh, "env:RT"), key="y"), budget(), env,
                                 transcript=transcript),
    ]
    for run in runs:
        try:
            run()
        except TokenError as exc:
            texts.append(exc.message())
    assert texts  # the wrong secret and the spent refresh token failed
    assert_no_secret(idp, transcript.text(), *texts)
    assert refresh not in " ".join(texts) and "bad-" + SECRET not in " ".join(texts)


def test_secrets_registered_for_redaction(idp: Any, env: Dict[str, str]) -> None:
    from prtg_roundtrip.secrets import registered

    refresh = idp.issue_refresh_token("app", USER)
    token = oauth2.get_token(generic(idp, refresh=SecretValue(refresh, "env:RT")), budget(), env)
    rotated = idp.tokens("refresh")[-1]
    for value in (token.value, refresh, rotated, SECRET):
        assert value in registered()
    assert token.value not in repr(token)

"""OAuth2 logins end to end: the sensor fetches a token from the suite's token service
(tools/tokenservice.py, fixture `tokens`) and logs in with XOAUTH2 / OAUTHBEARER to the real
Dovecot (IMAP) and, through Dovecot SASL, the real Postfix (SMTP); Dovecot introspects every
token at the same service. Each test counts the token requests the service received.

The mailbox is the password-less OAuth user (stack["oauth2"]["users"]["oauth"]); the sender
logs in to SMTP as itself with its own token (a user token) or with the app's token (app-only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from conftest import ROOT, SensorRun, host, port, run_sensor, with_options

APP = "roundtrip-sensor-app"
APP_SECRET = "App-S3cret-4d2f8e"  # a test value that must never show up


@pytest.fixture
def idp(tokens: Any, tmp_path: Path) -> Iterator[Any]:
    """The token service, reset, with the sensor's app allowed into the OAuth mailbox and the
    sender's; a fresh token cache (state folder) per test."""
    tokens.reset()
    yield tokens
    tokens.reset()


def user(stack: Dict[str, Any]) -> str:
    return str(stack["oauth2"]["users"]["oauth"]["login"])


def sender(stack: Dict[str, Any]) -> str:
    return str(stack["users"]["sender"]["login"])


def state_env(tmp_path: Path) -> Dict[str, str]:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700, exist_ok=True)
    return {"PRTG_RT_STATE_DIR": str(folder)}


def oauth_args(stack: Dict[str, Any], idp: Any, imap: str = "imap_starttls", smtp: str = "submission",
               imap_tls: str = "starttls", smtp_tls: str = "starttls", **options: str) -> List[str]:
    """A command line with both legs on OAuth2, the generic provider, client credentials."""
    idp.add_client(APP, secret=APP_SECRET, mailboxes=[user(stack), sender(stack)])
    args = [
        "--smtp-host", host(stack, smtp), "--smtp-port", port(stack, smtp), "--smtp-tls", smtp_tls,
        "--smtp-auth", "oauth2", "--smtp-user", sender(stack),
        "--imap-host", host(stack, imap), "--imap-port", port(stack, imap), "--imap-tls", imap_tls,
        "--imap-auth", "oauth2", "--imap-user", user(stack),
        "--from", sender(stack), "--to", stack["oauth2"]["users"]["oauth"]["address"],
        "--oauth2-provider", "generic", "--oauth2-token-url", idp.token_url,
        "--oauth2-client-id", APP, "--oauth2-client-secret", "env:RT_APP_SECRET",
        "--ca-file", stack["ca_file"], "--interval", "1", "--max-trip-time", "10", "--timeout", "30",
        "--helo", "probe.roundtrip.test", "--channels", "detailed",
    ]
    return with_options(args, **options)


def sensor(args: List[str], tmp_path: Path, env: Dict[str, str] | None = None, verbose: bool = True) -> SensorRun:
    full = {"RT_APP_SECRET": APP_SECRET, **state_env(tmp_path), **(env or {})}
    return run_sensor(args + (["--verbose"] if verbose else []), env=full)


def channel(run: SensorRun, name: str) -> float:
    return run.doc.value(name)


def assert_no_secret(run: SensorRun, idp: Any) -> None:
    for secret in [APP_SECRET, *idp.secrets()]:
        assert secret not in run.stdout and secret not in run.stderr, f"secret leaked: {secret[:6]}..."


@pytest.mark.parametrize(("mechanism", "imap", "imap_tls", "smtp", "smtp_tls"), [
    ("xoauth2", "imap_starttls", "starttls", "submission", "starttls"),
    ("oauthbearer", "imap_starttls", "starttls", "submission", "starttls"),
    ("xoauth2", "imaps", "tls", "smtps", "tls"),
    ("oauthbearer", "imaps", "tls", "smtps", "tls"),
])
def test_both_legs_log_in_with_a_token(stack, idp, tmp_path, mechanism, imap, imap_tls, smtp, smtp_tls):
    args = oauth_args(stack, idp, imap=imap, imap_tls=imap_tls, smtp=smtp, smtp_tls=smtp_tls,
                      oauth2_mechanism=mechanism)
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    name = mechanism.upper()
    assert f"IMAP > AUTHENTICATE {name} ***" in run.stderr
    assert f"SMTP > AUTH {name} ***" in run.stderr
    assert idp.requests("token") == 1  # one app-only token serves both legs
    assert idp.requests("introspect") >= 2  # Dovecot checked it for IMAP and for SMTP
    assert channel(run, "Token") > 0
    assert_no_secret(run, idp)


def test_auto_prefers_oauthbearer(stack, idp, tmp_path):
    run = sensor(oauth_args(stack, idp), tmp_path)
    assert not run.error, run.text
    assert "AUTHENTICATE OAUTHBEARER ***" in run.stderr and "AUTH OAUTHBEARER ***" in run.stderr


def test_a_cached_token_makes_no_request(stack, idp, tmp_path):
    args = oauth_args(stack, idp)
    first = sensor(args, tmp_path)
    second = sensor(args, tmp_path)
    assert not first.error and not second.error, (first.text, second.text)
    assert idp.requests("token") == 1
    assert channel(second, "Token") == 0
    assert "token: cached" in second.stderr


def test_an_expired_token_is_fetched_again(stack, idp, tmp_path):
    idp.set_lifetime(2)  # the cache renews within 10% of a short lifetime: 0.2 s
    args = oauth_args(stack, idp)
    assert not sensor(args, tmp_path).error
    time.sleep(2.5)  # the cached token has expired now
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    assert idp.requests("token") == 2
    assert channel(run, "Token") > 0


def test_a_revoked_token_is_refused_then_fetched_once_more(stack, idp, tmp_path):
    args = oauth_args(stack, idp)
    assert not sensor(args, tmp_path).error
    for token in list(idp.secrets()):
        if token.startswith("rtAT-"):
            idp.revoke(token)
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    assert idp.requests("token") == 2
    assert "the server refused the token: dropping it and fetching a new one" in run.stderr


def test_a_token_refused_twice_is_the_error_with_the_servers_words(stack, idp, tmp_path):
    args = oauth_args(stack, idp, oauth2_scope="https://other.roundtrip.test/")
    idp.add_client(APP, secret=APP_SECRET, scope="https://other.roundtrip.test/", mailboxes=[user(stack)])
    run = sensor(args, tmp_path)
    assert run.error
    assert run.text.startswith("IMAP receive"), run.text
    assert "refused the OAuth2 token" in run.text and user(stack) in run.text
    assert "status 401" in run.text or "invalid" in run.text.lower() or "failed" in run.text.lower()
    assert idp.requests("token") == 2  # refetched once, not more
    assert_no_secret(run, idp)


def test_no_mailbox_permission_names_the_permission(stack, idp, tmp_path):
    args = oauth_args(stack, idp)
    idp.add_client(APP, secret=APP_SECRET, mailboxes=[sender(stack)])  # not the watched mailbox
    run = sensor(args, tmp_path)
    assert run.error and run.text.startswith("IMAP receive"), run.text
    assert "Add-MailboxPermission" in run.text


def test_wrong_client_secret(stack, idp, tmp_path):
    run = sensor(oauth_args(stack, idp), tmp_path, env={"RT_APP_SECRET": "wrong-secret-123"})
    assert run.error and run.text.startswith("OAuth2 token"), run.text
    assert "invalid_client" in run.text
    assert "wrong-secret-123" not in run.stdout + run.stderr


def test_identity_provider_down(stack, idp, tmp_path):
    idp.set_down(True)
    run = sensor(oauth_args(stack, idp), tmp_path)
    assert run.error and run.text.startswith("OAuth2 token"), run.text
    assert "temporarily_unavailable" in run.text or "503" in run.text


def test_identity_provider_down_as_the_mail_server_reports_it(stack, idp, tmp_path):
    args = oauth_args(stack, idp)
    assert not sensor(args, tmp_path).error  # a token in the cache
    idp.set_down(True)  # Dovecot's introspection fails now
    run = sensor(args, tmp_path)
    assert run.error and run.text.startswith("IMAP receive"), run.text
    assert "UNAVAILABLE" in run.text and "could not check the OAuth2 token" in run.text


def test_a_hanging_token_endpoint_ends_inside_the_budget(stack, idp, tmp_path):
    idp.set_hang(60)
    try:
        started = time.monotonic()
        run = sensor(oauth_args(stack, idp, timeout="6"), tmp_path)
        took = time.monotonic() - started
    finally:
        idp.set_hang(0)
    assert run.error and run.text.startswith("OAuth2 token"), run.text
    assert took < 6 + 3  # the process, not the test, holds the budget (structural bound)


def test_refresh_token_grant_with_rotation_writes_the_new_one_back(stack, idp, tmp_path):
    idp.add_client(APP, secret=APP_SECRET)
    stored = tmp_path / "refresh-token"
    stored.write_text(idp.issue_refresh_token(APP, user(stack)) + "\n")
    stored.chmod(0o600)
    smtp_store = tmp_path / "smtp-refresh-token"
    smtp_store.write_text(idp.issue_refresh_token(APP, sender(stack)) + "\n")
    args = oauth_args(stack, idp, imap_refresh_token=f"file:{stored}", smtp_refresh_token=f"file:{smtp_store}")
    idp.add_client(APP, secret=APP_SECRET)  # a user-token client: no mailbox permission needed
    before = stored.read_text().strip()
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    after = stored.read_text().strip()
    assert after != before and after.startswith("rtRT-")
    assert stored.stat().st_mode & 0o777 == 0o600
    assert "written back to file:" in run.stderr
    assert_no_secret(run, idp)


def test_token_command(stack, idp, tmp_path):
    imap_token, smtp_token = idp.mint(user(stack)), idp.mint(sender(stack))
    helper = tmp_path / "token-helper.py"
    tokens_by_leg = {"imap": imap_token, "smtp": smtp_token}
    helper.write_text(f"import sys\nprint({tokens_by_leg!r}[sys.argv[1]])\n")
    args = [a for a in oauth_args(stack, idp)]
    for option in ("--oauth2-provider", "--oauth2-token-url", "--oauth2-client-id", "--oauth2-client-secret"):
        i = args.index(option)
        del args[i:i + 2]
    args += ["--imap-token-command", f"{sys.executable} {helper} imap",
             "--smtp-token-command", f"{sys.executable} {helper} smtp"]
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    assert idp.requests("token") == 0
    assert imap_token not in run.stderr and smtp_token not in run.stderr


def test_a_token_never_goes_out_in_clear(stack, idp, tmp_path):
    args = oauth_args(stack, idp, imap="imap_plain", imap_tls="off")
    run = sensor(args, tmp_path)
    assert run.error and run.text.startswith("IMAP receive"), run.text
    assert "never sent without TLS" in run.text
    assert "AUTHENTICATE" not in run.stderr
    allowed = sensor(args + ["--oauth2-allow-plain"], tmp_path)
    assert not allowed.error, allowed.text


def test_allow_plain_is_for_loopback_only(stack, idp, tmp_path):
    args = oauth_args(stack, idp, imap_host="imap.example.com", imap_tls="off")
    run = sensor(args + ["--oauth2-allow-plain"], tmp_path)
    assert run.error and run.text.startswith("Parameters"), run.text
    assert "loopback" in run.text


def test_microsoft365_flow_against_the_local_token_service(stack, idp, tmp_path):
    args = oauth_args(stack, idp, oauth2_provider="microsoft365", oauth2_tenant="contoso.example",
                      oauth2_token_url=idp.url + "/contoso.example/oauth2/v2.0/token",
                      oauth2_scope="https://mail.roundtrip.test/.default")
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    assert idp.requests("token") == 1


def test_two_concurrent_runs_share_one_cache(stack, idp, tmp_path):
    args = oauth_args(stack, idp, sensor_id="concurrent")
    env = {**os.environ, "RT_APP_SECRET": APP_SECRET, **state_env(tmp_path)}
    env = {k: v for k, v in env.items() if not k.startswith("prtg_")}
    results: List[subprocess.CompletedProcess] = []

    def one() -> None:
        results.append(subprocess.run([sys.executable, "-m", "prtg_roundtrip", *args], capture_output=True,
                                      env=env, cwd=str(ROOT), timeout=60, check=False))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = [r.stdout.decode() for r in results]
    assert all("<error>1</error>" not in t for t in texts), texts
    assert idp.requests("token") == 1  # the second waited for the first's token


def test_bad_oauth2_parameters_are_refused_before_any_connection(stack, tmp_path):
    base = ["--smtp-host", "127.0.0.1", "--imap-host", "127.0.0.1", "--from", "a@example.com",
            "--to", "b@example.com", "--imap-auth", "oauth2", "--imap-user", "b@example.com"]
    cases = {
        "needs a token source": [],
        "--oauth2-token-url": ["--oauth2-provider", "generic", "--oauth2-client-id", "x"],
        "not HTTPS": ["--oauth2-provider", "generic", "--oauth2-client-id", "x",
                      "--oauth2-token-url", "http://idp.example.com/token"],
        "exactly one of": ["--oauth2-provider", "microsoft365", "--oauth2-tenant", "t", "--oauth2-client-id", "x"],
        "without --oauth2-provider": ["--oauth2-client-id", "x", "--imap-token-command", "true"],
    }
    for expected, extra in cases.items():
        run = sensor(base + extra, tmp_path, verbose=False)
        assert run.error and run.text.startswith("Parameters"), (expected, run.text)
        assert expected in run.text, (expected, run.text)


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json", "script-v2"])
def test_every_format_keeps_tokens_and_secrets_out(stack, idp, tmp_path, fmt):
    run = sensor(oauth_args(stack, idp, format=fmt), tmp_path)
    assert not run.error, run.text
    assert_no_secret(run, idp)


def test_the_token_cache_is_private_and_holds_no_client_secret(stack, idp, tmp_path):
    assert not sensor(oauth_args(stack, idp), tmp_path).error
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert files, "no token cache written"
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, path
        assert APP_SECRET not in path.read_text(errors="replace")


def test_google_service_account_acts_as_each_legs_user(stack, idp, tmp_path):
    """Domain-wide delegation: one token per leg, each for that leg's user (the IMAP mailbox and
    the SMTP sender), from a key file given by path; the key never shows up."""
    key = idp.add_service_account()
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(key))
    key_file.chmod(0o600)
    args = oauth_args(stack, idp)
    for option in ("--oauth2-client-id", "--oauth2-client-secret"):
        i = args.index(option)
        del args[i:i + 2]
    args = with_options(args, oauth2_provider="google", oauth2_service_account=str(key_file),
                        oauth2_scope=stack["oauth2"]["scope"])
    run = sensor(args, tmp_path)
    assert not run.error, run.text
    assert idp.requests("token") == 2  # a token for each user
    assert idp.tokens("access", user(stack)) and idp.tokens("access", sender(stack))
    assert key["private_key"] not in run.stdout + run.stderr
    assert_no_secret(run, idp)

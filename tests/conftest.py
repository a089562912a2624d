"""Fixtures: the real local mail stack, a way to run the sensor, and mailbox inspection.

The stack (tools/mailstack.py: Postfix + Dovecot from Debian's packages on loopback) is started
once per test session and stopped afterwards. PRTG_RT_PORT_BASE / PRTG_RT_STACK_DIR choose
another port block and directory, so two suites can run side by side. `tokens` is the OAuth2
token service (tools/tokenservice.py) that the stack's Dovecot asks about bearer tokens.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from imapclient import IMAPClient

ROOT = Path(__file__).resolve().parent.parent


def _load_tool(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_output = _load_tool("check_output")
mailstack = _load_tool("mailstack")
tokenservice = _load_tool("tokenservice")

# Each test session starts with no memory of earlier sweeps (prtg_roundtrip/state.py), and leaves
# no state folder behind.
os.environ["PRTG_RT_STATE_DIR"] = tempfile.mkdtemp(prefix="prtg-rt-state-")
atexit.register(shutil.rmtree, os.environ["PRTG_RT_STATE_DIR"], True)


@dataclass
class SensorRun:
    """One sensor process: exit code, stdout, stderr and the parsed, checked document."""

    args: List[str]
    returncode: int
    stdout: str
    stderr: str
    doc: Any  # check_output.Document

    @property
    def error(self) -> bool:
        return bool(self.doc.error)

    @property
    def text(self) -> str:
        return str(self.doc.text or "")


def run_sensor(args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 120,
               stdin: Optional[bytes] = None, fmt: Optional[str] = None) -> SensorRun:
    """Run `python -m prtg_roundtrip ARGS` as PRTG would; the document must pass the checker.

    stdin: what the process reads (Script v2 passes its parameters there); None gives it an
    empty, closed stdin like a service has.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "prtg_roundtrip", *args],
        capture_output=True,
        input=stdin if stdin is not None else b"",
        env=full_env,
        cwd=str(ROOT),
        timeout=timeout,
        check=False,
    )
    stdout = proc.stdout.decode("utf-8")
    fmt = fmt or next((f for f in ("prtg-json", "script-v2") if f in args), "prtg-xml")
    problems = check_output.check(stdout, fmt)
    assert not problems, f"document rejected by the checker: {problems}\n{stdout}"
    assert "Traceback" not in stdout
    run = SensorRun(args, proc.returncode, stdout, proc.stderr.decode("utf-8", "replace"),
                    check_output.parse(stdout, fmt))
    assert run.returncode == 0, run
    return run


@pytest.fixture(scope="session")
def stack() -> Iterator[Dict[str, Any]]:
    base = int(os.environ.get("PRTG_RT_PORT_BASE", "13000"))
    directory = os.environ.get("PRTG_RT_STACK_DIR", f"/tmp/prtg-roundtrip-tests-{base}")
    ms = mailstack.MailStack(directory, base)
    info = ms.start()
    info["_stack"] = ms
    yield info
    ms.stop()


@pytest.fixture(scope="session")
def tokens(stack: Dict[str, Any]) -> Iterator[Any]:
    """The OAuth2 token service (tools/tokenservice.TokenService), wired into the stack.

    It serves HTTPS with the stack's server certificate (verify with stack["ca_file"]) on the
    port where the stack's Dovecot introspects tokens (stack["oauth2"]["port"], port base + 443):
    IMAP and SMTP AUTH XOAUTH2 / OAUTHBEARER work with its tokens for every mailbox, also the
    password-less stack["oauth2"]["users"]["oauth"].  tokens.token_url is the token endpoint
    (tokens.url + "/token"; Microsoft's /TENANT/oauth2/v2.0/token works too).

    One service for the whole session: a test that registers clients, counts requests or
    changes its behaviour (set_down, set_hang, rotate_refresh_tokens, set_lifetime) calls
    tokens.reset() first and must not leave it down or hanging (reset() again at the end).
    """
    oauth2 = stack["oauth2"]
    service = tokenservice.TokenService(stack["host"], oauth2["port"], certfile=oauth2["server_cert"],
                                        keyfile=oauth2["server_key"])
    service.start()
    assert service.url == oauth2["url"], (service.url, oauth2["url"])
    yield service
    service.stop()


def port(info: Dict[str, Any], name: str) -> str:
    return str(info["ports"][name]["port"])


def host(info: Dict[str, Any], name: str) -> str:
    return str(info["ports"][name]["host"])


def base_args(info: Dict[str, Any], smtp: str = "smtp_plain", imap: str = "imap_plain",
              user: str = "probe") -> List[str]:
    """A complete, working command line against the stack (plain text both ways)."""
    u = info["users"][user]
    return [
        "--smtp-host", host(info, smtp), "--smtp-port", port(info, smtp), "--smtp-tls", "off",
        "--imap-host", host(info, imap), "--imap-port", port(info, imap), "--imap-tls", "off",
        "--imap-user", u["login"], "--imap-password", u["password"],
        "--from", info["users"]["sender"]["address"], "--to", u["address"],
        "--ca-file", info["ca_file"], "--interval", "1", "--max-trip-time", "10", "--timeout", "30",
        "--helo", "probe.roundtrip.test",
    ]


def with_options(args: List[str], **options: str) -> List[str]:
    """Replace or add options: with_options(args, smtp_tls="tls") sets --smtp-tls tls."""
    args = list(args)
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def imap_session(info: Dict[str, Any], user: str = "probe") -> IMAPClient:
    p = info["ports"]["imap_plain"]
    client = IMAPClient(p["host"], port=p["port"], ssl=False, timeout=10)
    client.login(info["users"][user]["login"], info["users"][user]["password"])
    return client


@pytest.fixture
def mailbox(stack: Dict[str, Any]) -> Iterator[IMAPClient]:
    """An IMAP session on the probe user's INBOX, emptied before the test."""
    client = imap_session(stack)
    client.select_folder("INBOX")
    uids = client.search(["ALL"])
    if uids:
        client.delete_messages(uids)
        client.expunge()
    yield client
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - a test may have broken the session on purpose
        pass


def probe_uids(client: IMAPClient) -> List[int]:
    client.noop()
    return list(client.search(["SUBJECT", "PRTG Roundtrip Mail"]))

"""No password, in any form, in anything the sensor writes: stdout, stderr (the --verbose
transcript), the result files. Every TLS mode and output format, success and failure, against
the real stack with known passwords."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from conftest import ROOT, base_args, with_options

SMTP_MODES = [("smtp_plain", "off"), ("smtp_starttls", "starttls"), ("smtps", "tls"), ("submission", "starttls")]
IMAP_MODES = [("imap_plain", "off"), ("imap_starttls", "starttls"), ("imaps", "tls")]


def wire_forms(user: str, password: str) -> List[str]:
    raw = password.encode()
    return [
        password,
        base64.b64encode(raw).decode(),
        base64.b64encode(b"\0" + user.encode() + b"\0" + raw).decode(),
        base64.b64encode(user.encode() + b"\0" + user.encode() + b"\0" + raw).decode(),
        password.encode().hex(),
    ]


def everything_written(args: List[str], result_dir: Path, env=None) -> str:
    proc = subprocess.run([sys.executable, "-m", "prtg_roundtrip", *args, "--verbose", "--store-result",
                           "--result-dir", str(result_dir), "--sensor-id", "77"],
                          capture_output=True, cwd=str(ROOT), env=env, timeout=120, check=False)
    assert proc.returncode in (0, 1)
    assert b"SMTP" in proc.stderr or b"IMAP" in proc.stderr  # the transcript was written
    files = "".join(p.read_text(encoding="utf-8") for p in result_dir.glob("Result of Sensor 77*"))
    return proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8", "replace") + files


def assert_clean(text: str, stack, *users: str, extra=()):
    """extra: (login, password) pairs besides the stack users' own."""
    pairs = [(stack["users"][n]["login"], stack["users"][n]["password"]) for n in users] + list(extra)
    for login, password in pairs:
        for form in wire_forms(login, password):
            assert form not in text, f"{login}'s password leaked as {form!r}"


@pytest.mark.parametrize(("smtp", "smtp_tls"), SMTP_MODES)
@pytest.mark.parametrize(("imap", "imap_tls"), IMAP_MODES)
def test_every_tls_mode_with_auth_keeps_passwords_out(stack, mailbox, tmp_path, smtp, smtp_tls, imap, imap_tls):
    sender = stack["users"]["sender"]
    args = with_options(base_args(stack, smtp=smtp, imap=imap), smtp_tls=smtp_tls, imap_tls=imap_tls,
                        smtp_auth="password", smtp_user=sender["login"], smtp_password=sender["password"])
    text = everything_written(args, tmp_path)
    assert "Round trip" in text
    assert_clean(text, stack, "sender", "probe")


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json", "script-v2", "text"])
def test_every_format_keeps_passwords_out(stack, mailbox, tmp_path, fmt):
    sender = stack["users"]["sender"]
    args = with_options(base_args(stack), smtp_auth="password", smtp_user=sender["login"],
                        smtp_password=sender["password"], format=fmt, channels="detailed")
    assert_clean(everything_written(args, tmp_path), stack, "sender", "probe")


@pytest.mark.parametrize("leg", ["smtp", "imap"])
def test_rejected_passwords_stay_out_too(stack, mailbox, tmp_path, leg):
    wrong = "Wr0ng-Pw-" + leg + "-5e7d1a"
    sender = stack["users"]["sender"]
    args = with_options(base_args(stack, smtp="smtp_starttls"), smtp_tls="starttls", smtp_auth="password",
                        smtp_user=sender["login"], smtp_password=wrong if leg == "smtp" else sender["password"])
    if leg == "imap":
        args = with_options(args, imap_password=wrong)
    text = everything_written(args, tmp_path)
    assert "login rejected" in text
    login = sender["login"] if leg == "smtp" else stack["users"]["probe"]["login"]
    assert_clean(text, stack, "sender", "probe", extra=[(login, wrong)])


def test_device_credential_placeholders_are_never_echoed(stack, mailbox, tmp_path):
    import os

    probe = stack["users"]["probe"]
    args = [a for a in base_args(stack)]
    i = args.index("--imap-password")
    del args[i : i + 2]
    env = {**os.environ, "prtg_linuxpassword": probe["password"], "prtg_linuxuser": probe["login"],
           "prtg_windowspassword": "unused-but-secret-9f8e"}
    text = everything_written(args + ["--imap-credentials", "linux"], tmp_path, env=env)
    assert "Round trip" in text
    assert_clean(text, stack, "probe", extra=[("x", "unused-but-secret-9f8e")])

"""PRTG's "Credentials for Script Sensors" as a credential source (issue 11): `placeholder:N`
reads prtg_scriptplaceholderN, which the Python Script Advanced entry maps from PRTG's
scriptplaceholderN; the values are secrets wherever they show up."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from conftest import ROOT, base_args, check_output, probe_uids

from prtg_roundtrip import cli


def _login_free(args: List[str]) -> List[str]:
    args = list(args)
    i = args.index("--imap-password")
    del args[i: i + 2]
    return args


def _clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("prtg_", "PRTG_ROUNDTRIP"))}


def test_python_script_advanced_placeholder_end_to_end(stack, mailbox) -> None:
    password = stack["users"]["probe"]["password"]
    params = shlex.join(_login_free(base_args(stack)) + ["--imap-password", "placeholder:2", "--verbose"])
    data = {"host": "127.0.0.1", "params": params, "scriptplaceholder1": "unused-secret-1",
            "scriptplaceholder2": password}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prtg_roundtrip_python.py"), json.dumps(data)],
                          capture_output=True, env=_clean_env(), cwd="/", timeout=120, check=False)
    text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, "prtg-json") == [], text
    assert not check_output.parse(text, "prtg-json").error, text
    everything = text + proc.stderr.decode("utf-8", "replace")
    assert password not in everything and "unused-secret-1" not in everything
    assert probe_uids(mailbox) == []


def test_script_v2_placeholder_from_the_environment(stack, mailbox, tmp_path: Path) -> None:
    launcher = Path(shutil.copy2(ROOT / "scripts" / "prtg-roundtrip.sh", tmp_path / "prtg-roundtrip.sh"))
    launcher.chmod(0o755)
    env = _clean_env()
    env["PRTG_ROUNDTRIP_PYTHON"] = sys.executable
    env["prtg_scriptplaceholder5"] = stack["users"]["probe"]["password"]
    line = shlex.join(_login_free(base_args(stack)) + ["--imap-password", "placeholder:5"])
    proc = subprocess.run([str(launcher)], input=line.encode(), capture_output=True, env=env, cwd=str(ROOT),
                          timeout=120, check=False)
    text = proc.stdout.decode("utf-8")
    assert check_output.check(text, "script-v2") == [] and '"status": "ok"' in text, text
    assert probe_uids(mailbox) == []


def _run(argv: List[str], environ: Dict[str, str]) -> str:
    out = io.BytesIO()
    assert cli.main(argv, environ=environ, stdout=out, stdin=io.BytesIO(b"")) == 0
    doc = check_output.parse(out.getvalue().decode("utf-8"), "prtg-xml")
    assert doc.error
    return str(doc.text)


GOOD = ["--from", "a@b.c", "--to", "x@y.z", "--imap-host", "127.0.0.1", "--imap-user", "u", "--smtp-host", "h"]


def test_placeholder_errors_name_the_placeholder_never_a_value() -> None:
    text = _run(GOOD + ["--imap-password", "placeholder:6"], {})
    assert "placeholder:6 is not a placeholder number" in text
    text = _run(GOOD + ["--imap-password", "placeholder:3"], {"prtg_scriptplaceholder1": "Other-Secret"})
    assert "prtg_scriptplaceholder3 is not set or empty" in text and "Other-Secret" not in text


def test_script_placeholders_are_masked_even_when_unused() -> None:
    text = _run(GOOD[:4] + ["--imap-host", "bad host Sekret-xyz", "--imap-user", "u", "--imap-password", "p",
                            "--smtp-host", "h"],
                {"prtg_scriptplaceholder4": "Sekret-xyz"})
    assert "is not a host name" in text and "Sekret-xyz" not in text and "***" in text

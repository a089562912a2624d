"""What a run imports, and when: structural guards for the start-up cost and for the measured
legs (issue 9). The figures are tools/bench's; these tests assert facts, never times."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Dict, List, Optional

from conftest import ROOT, base_args, with_options

# Imported by none of the runs below: only OAuth2, result files, the credentials command or
# something the sensor avoids on purpose (startup.py) need them.
NEVER = ("importlib.metadata", "keyring", "prtg_roundtrip.oauth2", "prtg_roundtrip.resultfile",
         "prtg_roundtrip.credentials", "msal", "google")
# A refused parameter never reaches the protocol modules.
PROTOCOL = ("imapclient", "imaplib", "smtplib", "ssl", "email.message", "prtg_roundtrip.roundtrip",
            "prtg_roundtrip.tls", "prtg_roundtrip.state")


def _imports(args: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """The sensor as PRTG runs it, with -X importtime (stderr: one line per module, in order,
    interleaved with the --verbose transcript)."""
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "prtg_roundtrip", *args],
                          capture_output=True, text=True, cwd=str(ROOT), env=full_env, timeout=120, check=False)


def _modules(stderr: str) -> List[str]:
    return [line.split("|")[2].strip() for line in stderr.splitlines() if line.startswith("import time:")][1:]


def _imported(modules: List[str], names) -> List[str]:
    return sorted({m for m in modules for name in names if m == name or m.startswith(name + ".")})


def test_a_refused_parameter_imports_no_protocol_module():
    proc = _imports(["--smtp-host", "mail.example.com", "--smtp-port", "0", "--format", "prtg-json"])
    assert '"error": 1' in proc.stdout and "--smtp-port" in proc.stdout
    modules = _modules(proc.stderr)
    assert "prtg_roundtrip.cli" in modules  # (the list is real)
    assert _imported(modules, PROTOCOL + NEVER) == []


def test_a_round_trip_imports_nothing_it_does_not_use(stack, mailbox):
    proc = _imports(base_args(stack) + ["--format", "prtg-json"])
    assert '"error": 0' in proc.stdout or '"error"' not in proc.stdout, proc.stdout
    modules = _modules(proc.stderr)
    assert "imapclient" in modules and "smtplib" in modules and "jinja2" in modules
    assert _imported(modules, NEVER) == []


def test_no_import_inside_the_measured_legs(stack, mailbox):
    """Between the SMTP connect and the mailbox check that found the probe, the process does
    protocol work only: no module is imported there (its CPU time would land in the channels).
    SMTP over TLS after a plain IMAP login: the SMTP handshake and its certificate check are
    the first of the run (tls.make_context prepares them)."""
    args = with_options(base_args(stack, smtp="smtps"), smtp_tls="tls")
    proc = _imports(args + ["--verbose", "--format", "prtg-json"])
    assert '"error": 0' in proc.stdout or '"error"' not in proc.stdout, proc.stdout
    lines = proc.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r" SMTP \* connecting to ", line))
    found = next(i for i, line in enumerate(lines) if re.search(r" IMAP < \* SEARCH \d", line))
    assert start < found
    inside = [line for line in lines[start:found] if line.startswith("import time:")]
    assert inside == []

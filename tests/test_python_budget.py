"""Python Script Advanced's budget (issue 11): PRTG kills the script at its scanning interval minus
1 s, so the entry (scripts/prtg_roundtrip_python.py) sets --timeout one second below that point,
and a slow failure still prints its document."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from typing import Any, Dict, List

import pytest
from conftest import ROOT, check_output

ENTRY = ROOT / "scripts" / "prtg_roundtrip_python.py"
spec = importlib.util.spec_from_file_location("budget_tests_python_entry", ENTRY)
assert spec is not None and spec.loader is not None
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)


@pytest.mark.parametrize("data, budget", [
    ({}, 58),                                   # PRTG's default interval of 60 s: killed at 59 s
    ({"interval": 300}, 298),                   # a longer interval, killed at 299 s
    ({"interval": "30"}, 28),                   # numbers may come as strings
    ({"timeout": 20, "interval": 300}, 19),     # PRTG's own killing point wins where it is given
    ({"interval": 6}, 5),                       # never below --timeout's minimum
    ({"interval": 3600}, 900),                  # nor above its maximum
    ({"interval": "soon", "timeout": None}, 58),  # what is not a number is ignored
])
def test_the_budget_ends_before_prtg_kills_the_script(data: Dict[str, Any], budget: int) -> None:
    assert entry.timeout_for(data) == budget
    assert entry.with_budget(["--to", "x"], data) == ["--to", "x", "--timeout", str(budget)]


def test_a_larger_timeout_is_lowered_and_a_smaller_one_stands() -> None:
    assert entry.with_budget(["--timeout", "60"], {}) == ["--timeout", "58"]
    assert entry.with_budget(["--timeout=120", "--to", "x"], {"interval": 60}) == ["--to", "x", "--timeout", "58"]
    assert entry.with_budget(["--timeout", "30"], {}) == ["--timeout", "30"]
    assert entry.with_budget(["--timeout", "soon"], {}) == ["--timeout", "soon"]  # the sensor refuses it


def test_a_slow_failure_prints_its_document_before_the_killing_point() -> None:
    """A server that accepts and never greets, per-leg timeouts of 60 s: the budget has to end it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the connects; nobody ever answers
    try:
        port = str(silent.getsockname()[1])
        args: List[str] = ["--imap-host", "127.0.0.1", "--imap-port", port, "--imap-tls", "off",
                           "--imap-timeout", "60", "--smtp-timeout", "60", "--imap-user", "u",
                           "--imap-password", "p", "--from", "a@example.com", "--to", "b@example.com"]
        data = {"host": "127.0.0.1", "params": shlex.join(args), "interval": 7}
        env = {k: v for k, v in os.environ.items() if not k.startswith("prtg_")}
        proc = subprocess.run([sys.executable, str(ENTRY), json.dumps(data)],
                              capture_output=True, env=env, cwd=str(ROOT), timeout=60, check=False)
    finally:
        silent.close()
    text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, "prtg-json") == [], text
    doc = check_output.parse(text, "prtg-json")
    # the wait was cut to what the 5 s budget left (without it: the leg's own 60 s, past PRTG's kill)
    match = re.search(r"no answer within ([0-9.]+) s \(timed out\) during greeting", str(doc.text))
    assert doc.error and match and float(match.group(1)) < 5, doc.text

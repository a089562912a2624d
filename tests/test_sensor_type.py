"""Which sensor type is calling (issue 11): Script v2 only when something says so.

The Script v2 launcher sets PRTG_ROUNDTRIP_SCRIPT_V2=1, or parameters are already waiting on
stdin; an empty command line with a closed, empty or silent stdin is EXE/Script Advanced with an
empty Parameters field, answered in PRTG XML with the missing settings named, and a stdin that
nobody writes to is never read.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from conftest import ROOT, check_output

from prtg_roundtrip import cli

MARKER = {"PRTG_ROUNDTRIP_SCRIPT_V2": "1"}
NEEDED = ("--from", "--to", "--imap-host", "--imap-user", "--imap-password")


def run(argv: List[str], environ: Optional[Dict[str, str]] = None, stdin: Any = None) -> Tuple[str, Any]:
    out = io.BytesIO()
    assert cli.main(argv, environ=environ or {}, stdout=out, stdin=stdin) == 0
    text = out.getvalue().decode("utf-8")
    fmt = "prtg-xml" if text.startswith("<") else "script-v2" if '"version"' in text else "prtg-json"
    assert check_output.check(text, fmt) == [], text
    return fmt, check_output.parse(text, fmt)


def test_empty_parameters_and_empty_stdin_answer_in_xml_naming_what_is_missing() -> None:
    fmt, doc = run([], stdin=io.BytesIO(b""))
    assert fmt == "prtg-xml" and doc.error
    assert all(option in doc.text for option in NEEDED) and "--smtp-host" in doc.text, doc.text
    fmt, doc = run([], environ={"prtg_host": "smtp.example.com"}, stdin=io.BytesIO(b"  \n--from a@b.c\n"))
    assert fmt == "prtg-xml" and "no parameters were given" in doc.text and "--smtp-host" not in doc.text


def test_a_silent_stdin_is_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[Any] = []

    def read_line(*args: Any) -> bytes:
        calls.append(args)
        return b""

    monkeypatch.setattr(cli, "read_line", read_line)
    read_fd, write_fd = os.pipe()  # a pipe nobody writes to and nobody closes
    try:
        with os.fdopen(read_fd, "rb", closefd=False) as stream:
            fmt, doc = run([], stdin=stream)
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert fmt == "prtg-xml" and "no parameters were given" in doc.text
    assert calls == []


def test_parameters_waiting_on_stdin_are_script_v2() -> None:
    fmt, doc = run([], stdin=io.BytesIO(b"--from a@b.c\n"))
    assert fmt == "script-v2" and "--to is missing" in doc.text
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"--from a@b.c --to x@y.z\n")  # already there when the sensor looks
        with os.fdopen(read_fd, "rb", closefd=False) as stream:
            fmt, doc = run([], stdin=stream)
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert fmt == "script-v2" and "--smtp-host is missing" in doc.text, doc.text


def test_the_marker_makes_script_v2_even_with_nothing_on_stdin() -> None:
    fmt, doc = run([], environ=MARKER, stdin=io.BytesIO(b""))
    assert fmt == "script-v2" and doc.error and all(option in doc.text for option in NEEDED)
    fmt, doc = run(["--from", "a@b.c"], environ=MARKER, stdin=io.BytesIO(b"ignored\n"))
    assert fmt == "script-v2" and "--to is missing" in doc.text
    fmt, _ = run(["--from", "a@b.c", "--format", "prtg-json"], environ=MARKER, stdin=io.BytesIO(b""))
    assert fmt == "prtg-json"


def test_arguments_are_never_mixed_with_stdin() -> None:
    fmt, doc = run(["--from", "a@b.c"], stdin=io.BytesIO(b"--to x@y.z\n"))
    assert fmt == "prtg-xml" and "--to is missing" in doc.text


@pytest.mark.parametrize("stdin, fmt", [(subprocess.DEVNULL, "script-v2"), (b"--from a@b.c\n", "script-v2")])
def test_the_sh_launcher_declares_script_v2(tmp_path: Path, stdin: Any, fmt: str) -> None:
    launcher = Path(shutil.copy2(ROOT / "scripts" / "prtg-roundtrip.sh", tmp_path / "prtg-roundtrip.sh"))
    launcher.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("prtg_", "PRTG_ROUNDTRIP"))}
    env["PRTG_ROUNDTRIP_PYTHON"] = sys.executable
    kwargs: Dict[str, Any] = {"stdin": stdin} if stdin is subprocess.DEVNULL else {"input": stdin}
    proc = subprocess.run([str(launcher)], capture_output=True, env=env, cwd=str(ROOT), timeout=60, check=False,
                          **kwargs)
    text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, fmt) == [], text
    assert check_output.parse(text, fmt).error
    with_args = subprocess.run([str(launcher), "--from", "a@b.c"], capture_output=True, env=env, cwd=str(ROOT),
                               timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert with_args.stdout.decode("utf-8").startswith("<?xml"), with_args.stdout


MARKER_C = r"""
#include <windows.h>
/* python.exe stand-in: says whether PRTG_ROUNDTRIP_SCRIPT_V2 is 1 in its environment. */
int wmain(void) {
  wchar_t v[64];
  DWORD n;
  const char *s = GetEnvironmentVariableW(L"PRTG_ROUNDTRIP_SCRIPT_V2", v, 64)
      ? (v[0] == L'1' && v[1] == 0 ? "MARKER:1\n" : "MARKER:other\n") : "MARKER:unset\n";
  WriteFile(GetStdHandle(STD_OUTPUT_HANDLE), s, lstrlenA(s), &n, NULL);
  return 0;
}
"""


@pytest.mark.parametrize("folder, expected", [("scripts", b"MARKER:1"), ("EXEXML", b"MARKER:unset")])
def test_the_bat_declares_script_v2_in_the_scripts_folder_under_wine(tmp_path: Path, folder: str,
                                                                     expected: bytes) -> None:
    """Only the Script v2 sensor runs launchers from Custom Sensors\\scripts (Windows probe)."""
    import test_launchers as launchers

    if shutil.which("wine") is None or shutil.which(launchers.MINGW) is None:
        pytest.skip("wine or MinGW not installed: run tools/install-wine (as root) for the .bat tests")
    sensors = tmp_path / "PRTG Network Monitor (x86)" / "Custom Sensors" / folder
    python = sensors / ".venv" / "Scripts" / "python.exe"
    python.parent.mkdir(parents=True)
    source = tmp_path / "marker.c"
    source.write_text(MARKER_C, encoding="utf-8")
    subprocess.run([launchers.MINGW, "-municode", "-O2", "-o", str(python), str(source)], check=True, timeout=120)
    spawn = tmp_path / "bin" / "spawn.exe"
    spawn.parent.mkdir()
    (tmp_path / "spawn.c").write_text(launchers.SPAWN_C, encoding="utf-8")
    subprocess.run([launchers.MINGW, "-municode", "-O2", "-o", str(spawn), str(tmp_path / "spawn.c")], check=True,
                   timeout=120)
    shutil.copy2(ROOT / "scripts" / "prtg-roundtrip.bat", sensors / "prtg-roundtrip.bat")
    wine = launchers.Wine(spawn.parent)
    proc = wine.run_bat(sensors / "prtg-roundtrip.bat", "")
    assert proc.returncode == 0 and proc.stdout.strip() == expected, proc


def test_the_bat_without_python_answers_script_v2_in_the_scripts_folder_under_wine(tmp_path: Path) -> None:
    import test_launchers as launchers

    if shutil.which("wine") is None or shutil.which(launchers.MINGW) is None:
        pytest.skip("wine or MinGW not installed: run tools/install-wine (as root) for the .bat tests")
    sensors = tmp_path / "PRTG Network Monitor (x86)" / "Custom Sensors" / "scripts"
    sensors.mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "prtg-roundtrip.bat", sensors / "prtg-roundtrip.bat")
    spawn = tmp_path / "bin" / "spawn.exe"
    spawn.parent.mkdir()
    (tmp_path / "spawn.c").write_text(launchers.SPAWN_C, encoding="utf-8")
    subprocess.run([launchers.MINGW, "-municode", "-O2", "-o", str(spawn), str(tmp_path / "spawn.c")], check=True,
                   timeout=120)
    wine = launchers.Wine(spawn.parent)
    proc = wine.run_bat(sensors / "prtg-roundtrip.bat", "")  # no Python next to it, none in the prefix
    text = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0 and check_output.check(text, "script-v2") == [], text
    assert "no Python found" in str(check_output.parse(text, "script-v2").text)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
@pytest.mark.parametrize("terminal, fmt", [(False, "script-v2"), (True, "prtg-xml")])
def test_the_sh_declares_script_v2_only_off_a_terminal(tmp_path: Path, terminal: bool, fmt: str) -> None:
    """Without a Python (the error document's format shows the decision): no arguments and a piped
    stdin is Script v2; no arguments at a terminal is not."""
    import pty

    launcher = Path(shutil.copy2(ROOT / "scripts" / "prtg-roundtrip.sh", tmp_path / "prtg-roundtrip.sh"))
    launcher.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("prtg_", "PRTG_ROUNDTRIP"))}
    env["PRTG_ROUNDTRIP_PYTHON"] = str(tmp_path / "no-such-python")
    controller, tty = pty.openpty() if terminal else (None, None)
    try:
        proc = subprocess.run([str(launcher)], stdin=tty if terminal else subprocess.PIPE, capture_output=True,
                              env=env, timeout=60, check=False)
    finally:
        for fd in (controller, tty):
            if fd is not None:
                os.close(fd)
    text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and check_output.check(text, fmt) == [], text

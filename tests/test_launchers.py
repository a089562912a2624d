"""The launchers in scripts/, run for real.

- prtg-roundtrip.sh: under every POSIX shell found (dash, bash, busybox), with stand-in
  interpreters that write back what they received byte for byte, and once with the real package.
- prtg-roundtrip.bat: under Wine's cmd.exe, started the way PRTG starts it
  (`cmd.exe /s/c ""<bat>" PARAMS"`, through CreateProcessW), with a MinGW-built argv-echo program
  as python.exe. Skipped with a reason where wine or x86_64-w64-mingw32-gcc is missing
  (`tools/install-wine` installs both). The prefix is PRTG_RT_WINEPREFIX, default
  /tmp/prtg-roundtrip-wine, created once per machine.
- prtg_roundtrip_python.py: PRTG's JSON argument in, the package called in-process.
- tools/bundle.py: the offline bundle built from the package index, installed into a fresh venv
  with --no-index and no pip configuration, and run (test_offline_bundle_*, about a minute;
  skipped when the package index cannot be reached).

What Wine cannot show, and what a real Windows probe still has to: docs/launchers.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


checker = _load(ROOT / "tools" / "check_output.py", "launcher_tests_check_output")
entry = _load(SCRIPTS / "prtg_roundtrip_python.py", "launcher_tests_python_entry")


def assert_document(stdout: Union[bytes, str], fmt: str) -> Any:
    """The document passes tools/check_output.py and is an error document; returns it parsed."""
    text = stdout.decode("utf-8") if isinstance(stdout, bytes) else stdout
    problems = checker.check(text, fmt)
    assert not problems, f"{problems}\n{text}"
    doc = checker.parse(text, fmt)
    assert doc.error
    return doc


# Values that a shell, cmd.exe or a careless launcher would change.
TRICKY = [
    "plain", "with space", "  two  spaces  ", 'double " quote', "single ' quote", "100%", "%PATH%",
    "%%", "!bang!", "caret ^ ^^", "amp & amp", "a|b", "<in >out", "$HOME", "${HOME}", "$(id)", "`id`",
    "back\\slash", "C:\\dir\\", "\\\\server\\share", "", " ", "Grüße €", "日本語", "tab\there",
    "new\nline", "*", "?", "[a]", ";", "a=b", "--format=text", "-", "--", "#hash", "~",
]


# --------------------------------------------------------------------------------------------
# prtg-roundtrip.sh


def _shells() -> List[List[str]]:
    found = []
    for shell in (["dash"], ["bash"], ["busybox", "sh"]):
        path = shutil.which(shell[0])
        if path and (shell[0] != "busybox" or subprocess.run([path, "sh", "-c", "true"], check=False).returncode == 0):
            found.append([path, *shell[1:]])
    return found or [["/bin/sh"]]


SHELLS = _shells()
SHELL_IDS = ["-".join([Path(shell[0]).name, *shell[1:]]) for shell in SHELLS]

ECHO_SH = """#!/bin/sh
# argv echo: NUL-separated, byte for byte, then the launcher's environment settings
printf 'ARGV0\\0%s\\0' "$0"
printf '%s\\0' "$@"
printf 'ENV\\0%s\\0%s\\0%s\\0' "${PYTHONIOENCODING-unset}" "${PYTHONUTF8-unset}" "${PYTHONSAFEPATH-unset}"
case $1 in -c) exit "${ECHO_CHECK_EXIT:-0}" ;; esac
exit "${ECHO_EXIT:-0}"
"""


def _write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.fixture
def sensor_dir(tmp_path: Path) -> Path:
    """A copy of the launcher in a folder whose name needs quoting: /opt/paessler/share/scripts."""
    folder = tmp_path / "paessler share (scripts) & more"
    folder.mkdir()
    shutil.copy2(SCRIPTS / "prtg-roundtrip.sh", folder / "prtg-roundtrip.sh")
    return folder


@pytest.fixture
def empty_path(tmp_path: Path) -> str:
    """A PATH with nothing on it: no python3, no prtg-roundtrip (the launcher uses builtins only)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return str(empty)


def run_sh(shell: List[str], script: Path, args: Sequence[Union[str, bytes]], path: str,
           env: Optional[Dict[str, str]] = None, stdin: Optional[bytes] = b"") -> subprocess.CompletedProcess:
    full_env = {"PATH": path, "HOME": "/nonexistent", "LANG": "C"}
    full_env.update(env or {})
    return subprocess.run([*shell, str(script), *args], input=stdin, capture_output=True,
                          env=full_env, cwd="/", timeout=60, check=False)


def echoed(stdout: bytes) -> Tuple[bytes, List[bytes], List[bytes]]:
    """(argv0, arguments, [PYTHONIOENCODING, PYTHONUTF8, PYTHONSAFEPATH]) from the echo."""
    fields = stdout.split(b"\0")
    assert fields[0] == b"ARGV0", stdout
    env_at = len(fields) - 1 - fields[::-1].index(b"ENV")
    return fields[1], fields[2:env_at], fields[env_at + 1:env_at + 4]


def _as_bytes(values: Sequence[Union[str, bytes]]) -> List[bytes]:
    return [v if isinstance(v, bytes) else v.encode("utf-8") for v in values]


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_sh_passes_every_argument_byte_identical(shell, sensor_dir, empty_path):
    python = _write_exe(sensor_dir / ".venv" / "bin" / "python", ECHO_SH)
    args: List[Union[str, bytes]] = [*TRICKY, b"not utf-8: \xff\xfe\x80", b"latin-1: Gr\xfc\xdfe"]
    proc = run_sh(shell, sensor_dir / "prtg-roundtrip.sh", args, empty_path)
    assert proc.returncode == 0, proc.stderr
    argv0, received, env = echoed(proc.stdout)
    assert argv0 == str(python).encode()
    assert received == [b"-m", b"prtg_roundtrip", *_as_bytes(args)]
    assert env == [b"utf-8", b"1", b"1"]
    assert proc.stderr == b""


@pytest.mark.parametrize("shell", SHELLS[:1], ids=SHELL_IDS[:1])
def test_sh_passes_no_arguments_and_stdin_through(shell, sensor_dir, empty_path):
    """Script v2: no arguments, the parameters on stdin; the launcher must not touch either."""
    _write_exe(sensor_dir / ".venv" / "bin" / "python",
               "#!/bin/sh\nprintf 'ARGC=%s\\n' \"$#\"\nexec cat\n")
    proc = run_sh(shell, sensor_dir / "prtg-roundtrip.sh", [], empty_path + ":/usr/bin:/bin",
                  stdin=b"--imap-host 'a b' --format script-v2\n")
    assert proc.stdout == b"ARGC=2\n--imap-host 'a b' --format script-v2\n"


def test_sh_passes_the_exit_code_through(sensor_dir, empty_path):
    _write_exe(sensor_dir / ".venv" / "bin" / "python", ECHO_SH)
    proc = run_sh(SHELLS[0], sensor_dir / "prtg-roundtrip.sh", ["x"], empty_path, env={"ECHO_EXIT": "3"})
    assert proc.returncode == 3


def test_sh_search_order(sensor_dir, tmp_path, empty_path):
    launcher = sensor_dir / "prtg-roundtrip.sh"
    shell = SHELLS[0]

    def first_choice(path: str = empty_path, env: Optional[Dict[str, str]] = None) -> Tuple[bytes, List[bytes]]:
        proc = run_sh(shell, launcher, ["--a", "b c"], path, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        argv0, received, _ = echoed(proc.stdout)
        return argv0, received

    # 3. python3 on PATH, only if prtg-roundtrip is installed in it
    bin_dir = tmp_path / "bin"
    python3 = _write_exe(bin_dir / "python3", ECHO_SH)
    assert first_choice(str(bin_dir)) == (str(python3).encode(), [b"-m", b"prtg_roundtrip", b"--a", b"b c"])
    proc = run_sh(shell, launcher, ["--a"], str(bin_dir), {"ECHO_CHECK_EXIT": "1"})
    doc = assert_document(proc.stdout, "prtg-xml")
    assert f"{python3} (prtg-roundtrip is not installed in it)" in doc.text

    # 2. an installed prtg-roundtrip command before that
    command = _write_exe(bin_dir / "prtg-roundtrip", ECHO_SH)
    assert first_choice(str(bin_dir)) == (str(command).encode(), [b"--a", b"b c"])

    # 1. a venv next to the launcher before that: prtg-roundtrip-venv, and .venv first
    named = _write_exe(sensor_dir / "prtg-roundtrip-venv" / "bin" / "python", ECHO_SH)
    assert first_choice(str(bin_dir))[0] == str(named).encode()
    dot = _write_exe(sensor_dir / ".venv" / "bin" / "python", ECHO_SH)
    assert first_choice(str(bin_dir))[0] == str(dot).encode()

    # 0. PRTG_ROUNDTRIP_PYTHON before everything
    override = _write_exe(tmp_path / "elsewhere" / "python", ECHO_SH)
    assert first_choice(str(bin_dir), {"PRTG_ROUNDTRIP_PYTHON": str(override)})[0] == str(override).encode()
    # ... and when it names nothing, it is an error, not a reason to take another Python
    proc = run_sh(shell, launcher, ["--format", "prtg-json"], str(bin_dir), {"PRTG_ROUNDTRIP_PYTHON": "/no/such"})
    assert proc.returncode == 0
    doc = assert_document(proc.stdout, "prtg-json")
    assert "PRTG_ROUNDTRIP_PYTHON=/no/such" in doc.text and str(dot) not in doc.text


def test_sh_does_not_call_itself_when_installed_as_prtg_roundtrip(tmp_path, empty_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(SCRIPTS / "prtg-roundtrip.sh", bin_dir / "prtg-roundtrip")
    proc = run_sh(SHELLS[0], bin_dir / "prtg-roundtrip", ["--format", "prtg-json"], str(bin_dir))
    assert proc.returncode == 0
    assert "prtg-roundtrip on PATH" in assert_document(proc.stdout, "prtg-json").text


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
@pytest.mark.parametrize(("args", "fmt"), [
    ([], "script-v2"),
    (["--imap-host", "x"], "prtg-xml"),
    (["--format", "prtg-json"], "prtg-json"),
    (["--format=prtg-json"], "prtg-json"),
    (["--format", "bogus", "--format", "prtg-json"], "prtg-json"),
    (["--format", "script-v2"], "script-v2"),
    (["--subject-text", "--format", "--format", "prtg-xml"], "prtg-xml"),
], ids=["no-args", "xml", "json", "json-equals", "json-after-bogus", "v2", "xml-odd"])
def test_sh_without_python_prints_an_error_document(shell, sensor_dir, empty_path, args, fmt):
    proc = run_sh(shell, sensor_dir / "prtg-roundtrip.sh", args, empty_path)
    assert proc.returncode == 0
    assert proc.stderr == b""
    doc = assert_document(proc.stdout, fmt)
    assert doc.text.startswith("prtg-roundtrip launcher: no Python found (looked in: ")
    for place in (f"{sensor_dir}/.venv/bin/python", f"{sensor_dir}/prtg-roundtrip-venv/bin/python",
                  "prtg-roundtrip on PATH", "python3 on PATH"):
        assert place in doc.text
    assert "--no-index --find-links wheels prtg-roundtrip" in doc.text
    assert len(doc.text) <= 2000


def test_sh_without_python_text_format_is_for_people(sensor_dir, empty_path):
    proc = run_sh(SHELLS[0], sensor_dir / "prtg-roundtrip.sh", ["--format", "text"], empty_path)
    assert proc.returncode == 1
    assert proc.stdout.decode().startswith("prtg-roundtrip launcher: no Python found")


def test_sh_escapes_what_it_reports(tmp_path, empty_path):
    """A folder name with & < > " \\ and a newline still gives well-formed XML and JSON."""
    folder = tmp_path / 'odd & <name> "q" \\ \t x\ny'
    folder.mkdir()
    shutil.copy2(SCRIPTS / "prtg-roundtrip.sh", folder / "prtg-roundtrip.sh")
    for fmt in ("prtg-xml", "prtg-json", "script-v2"):
        proc = run_sh(SHELLS[0], folder / "prtg-roundtrip.sh", ["--format", fmt], empty_path)
        assert f"{folder}/.venv/bin/python" in assert_document(proc.stdout, fmt).text


def test_sh_runs_the_real_package(sensor_dir, empty_path):
    """A venv next to the launcher whose python is this test's interpreter (package installed)."""
    _write_exe(sensor_dir / ".venv" / "bin" / "python", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for args, fmt in ((["--format", "prtg-json", "--subject-text", "a&b <c> 100% !x! ^"], "prtg-json"),
                      (["--imap-host", "imap.example.com"], "prtg-xml")):
        proc = run_sh(SHELLS[0], sensor_dir / "prtg-roundtrip.sh", args, empty_path)
        assert proc.returncode == 0, proc.stderr
        doc = assert_document(proc.stdout, fmt)
        assert "launcher" not in doc.text  # the package's own parameter error
    proc = run_sh(SHELLS[0], sensor_dir / "prtg-roundtrip.sh", ["--version"], empty_path)
    assert proc.returncode == 0 and proc.stdout.startswith(b"prtg-roundtrip ")


# --------------------------------------------------------------------------------------------
# prtg_roundtrip_python.py (Python Script Advanced)


def test_python_entry_builds_the_command_line():
    argv = entry.build_argv({
        "host": "mail.example.com",
        "params": "--imap-host imap.example.com --subject-text 'two words' --to \"a b\" --format prtg-xml "
                  "--credentials linux",
        "linuxloginusername": "probe", "linuxloginpassword": "s3cret",
    })
    assert argv == ["--imap-host", "imap.example.com", "--subject-text", "two words", "--to", "a b",
                    "--imap-credentials", "linux", "--smtp-host", "mail.example.com", "--format", "prtg-json"]
    assert "s3cret" not in argv and "probe" not in argv
    assert entry.build_argv({"host": "h", "params": "--smtp-host=other"}) == [
        "--smtp-host=other", "--format", "prtg-json"]
    assert entry.build_argv({}) == ["--format", "prtg-json"]


def test_python_entry_maps_the_device_data_to_prtgs_environment_names():
    environ = entry.build_environment(
        {"host": "h", "linuxloginusername": "lu", "linuxloginpassword": "lp", "windowsloginusername": "wu",
         "windowsloginpassword": "wp", "windowslogindomain": "D", "params": "", "sensorid": 1234},
        {"PATH": "/bin", "prtg_stale": "x"},
    )
    assert environ == {"PATH": "/bin", "prtg_host": "h", "prtg_linuxuser": "lu", "prtg_linuxpassword": "lp",
                       "prtg_windowsuser": "wu", "prtg_windowspassword": "wp", "prtg_windowsdomain": "D",
                       "prtg_sensorid": "1234"}


@pytest.mark.parametrize("params", ["--to 'unclosed", "--credentials solaris"])
def test_python_entry_refuses_bad_params_with_a_document(params, capfdbinary):
    assert entry.run(["x.py", json.dumps({"host": "h", "params": params})]) == 0
    assert "prtg_roundtrip_python.py" in assert_document(capfdbinary.readouterr().out, "prtg-json").text


def test_python_entry_calls_the_package_in_process(monkeypatch):
    import prtg_roundtrip.cli

    calls: List[Tuple[List[str], Dict[str, str]]] = []

    def fake_main(argv: List[str], environ: Dict[str, str]) -> int:
        calls.append((argv, environ))
        return 0

    monkeypatch.setattr(prtg_roundtrip.cli, "main", fake_main)
    monkeypatch.setattr(subprocess, "Popen", None)  # nothing may be started
    data = {"host": "h", "params": "--imap-host i --credentials windows", "windowsloginusername": "u",
            "windowsloginpassword": "p w"}
    assert entry.run(["x.py", json.dumps(data)]) == 0
    (argv, environ), = calls
    assert "p w" not in argv and environ["prtg_windowspassword"] == "p w"


def _run_entry(script: Path, data: Any, *python_flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("prtg_", "PYTHON"))}
    return subprocess.run([sys.executable, *python_flags, str(script), json.dumps(data)], capture_output=True,
                          env=env, cwd="/", timeout=120, check=False)


def test_python_entry_runs_the_package_and_keeps_the_password_out_of_the_document(tmp_path):
    data = {"host": "127.0.0.1", "params": "--imap-host 127.0.0.1 --imap-port 1 --smtp-port 1 --from a@example.com "
            "--to b@example.com --credentials linux --timeout 10 --smtp-timeout 2 --imap-timeout 2",
            "linuxloginusername": "probe", "linuxloginpassword": "pa55 w0rd"}
    proc = _run_entry(SCRIPTS / "prtg_roundtrip_python.py", data)
    assert proc.returncode == 0, proc.stderr
    doc = assert_document(proc.stdout, "prtg-json")
    assert "pa55 w0rd" not in proc.stdout.decode() and "connection refused" in doc.text


def test_python_entry_without_the_package_prints_a_document(tmp_path):
    script = shutil.copy2(SCRIPTS / "prtg_roundtrip_python.py", tmp_path / "prtg_roundtrip_python.py")
    proc = _run_entry(Path(script), {"host": "h", "params": ""}, "-I", "-S")  # no site-packages at all
    assert proc.returncode == 0 and proc.stderr == b""
    doc = assert_document(proc.stdout, "prtg-json")
    assert "cannot import prtg_roundtrip" in doc.text and "--no-index --find-links wheels" in doc.text


@pytest.mark.parametrize("raw", ["", "{not json", '["a list"]'])
def test_python_entry_without_a_usable_argument_prints_a_document(raw, capfdbinary):
    assert entry.run(["x.py", raw] if raw else ["x.py"]) == 0
    assert_document(capfdbinary.readouterr().out, "prtg-json")


def test_python_entry_finds_a_same_version_venv_next_to_it(tmp_path):
    """PRTG's Python without the package, and a venv beside the script that has it."""
    script = shutil.copy2(SCRIPTS / "prtg_roundtrip_python.py", tmp_path / "prtg_roundtrip_python.py")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = tmp_path / "prtg-roundtrip-venv"
    (venv / "lib" / f"python{version}" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {sys.version.split()[0]}\n", encoding="utf-8")
    # The package and its dependencies, as this test's environment has them.
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)}
    (venv / "lib" / f"python{version}" / "site-packages" / "here.pth").write_text("\n".join(sorted(paths)) + "\n")
    proc = _run_entry(Path(script), {"host": "h", "params": "--imap-host i"}, "-I", "-S")
    assert proc.returncode == 0, proc.stderr
    doc = assert_document(proc.stdout, "prtg-json")
    assert "cannot import" not in doc.text  # the package's own answer (a parameter error)

    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 2.7.18\n", encoding="utf-8")
    proc = _run_entry(Path(script), {"host": "h", "params": "--imap-host i"}, "-I", "-S")
    assert "cannot import prtg_roundtrip" in assert_document(proc.stdout, "prtg-json").text


# --------------------------------------------------------------------------------------------
# prtg-roundtrip.bat under Wine

ECHO_C = r"""
#include <windows.h>
#include <shellapi.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

/* python.exe stand-in: writes its command line, the C runtime's argv and CommandLineToArgvW's,
   and three environment variables, each as TAG:hex of the UTF-16 code units, one per line. */
static HANDLE out;

static void put(const char *s) { DWORD n; WriteFile(out, s, (DWORD)strlen(s), &n, NULL); }

static void put_hex(const char *tag, const wchar_t *w) {
  char buf[8];
  put(tag);
  put(":");
  for (const wchar_t *p = w; *p; p++) { snprintf(buf, sizeof buf, "%04x", (unsigned)*p); put(buf); }
  put("\n");
}

int wmain(int argc, wchar_t **argv) {
  static const wchar_t *names[] = {L"PYTHONIOENCODING", L"PYTHONUTF8", L"PYTHONSAFEPATH", NULL};
  wchar_t value[4096];
  out = GetStdHandle(STD_OUTPUT_HANDLE);
  put_hex("CMDLINE", GetCommandLineW());
  for (int i = 0; i < argc; i++) put_hex("CRTARG", argv[i]);
  int n = 0;
  LPWSTR *a = CommandLineToArgvW(GetCommandLineW(), &n);
  for (int i = 0; a && i < n; i++) put_hex("W32ARG", a[i]);
  for (int i = 0; names[i]; i++)
    put_hex("ENV", GetEnvironmentVariableW(names[i], value, 4096) ? value : L"unset");
  int check = argc > 1 && (wcscmp(argv[1], L"-c") == 0 || (argc > 2 && wcscmp(argv[2], L"-c") == 0));
  const wchar_t *code = check ? L"ECHO_CHECK_EXIT" : L"ECHO_EXIT";
  return GetEnvironmentVariableW(code, value, 16) ? _wtoi(value) : 0;
}
"""

SPAWN_C = r"""
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

/* spawn HEX: CreateProcessW(NULL, <command line>, inherited std handles), the command line given
   as hex UTF-16 code units, the way PRTG starts a sensor; returns the child's exit code. */
int wmain(int argc, wchar_t **argv) {
  if (argc != 2) { fputs("usage: spawn HEX\n", stderr); return 126; }
  size_t len = wcslen(argv[1]) / 4;
  wchar_t *cl = calloc(len + 1, sizeof(wchar_t));
  for (size_t i = 0; i < len; i++) {
    wchar_t part[5] = {argv[1][4 * i], argv[1][4 * i + 1], argv[1][4 * i + 2], argv[1][4 * i + 3], 0};
    cl[i] = (wchar_t)wcstoul(part, NULL, 16);
  }
  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  ZeroMemory(&si, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  if (!CreateProcessW(NULL, cl, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
    fprintf(stderr, "spawn: CreateProcessW failed: %lu\n", GetLastError());
    return 127;
  }
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 0;
  GetExitCodeProcess(pi.hProcess, &code);
  return (int)code;
}
"""

WINEPREFIX = os.environ.get("PRTG_RT_WINEPREFIX", "/tmp/prtg-roundtrip-wine")
MINGW = "x86_64-w64-mingw32-gcc"


class Wine:
    """Runs command lines through CreateProcessW inside the Wine prefix."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("prtg_", "PRTG_ROUNDTRIP", "WINE"))}
        self.env.update(WINEPREFIX=WINEPREFIX, WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
        self.env.pop("DISPLAY", None)

    @staticmethod
    def windows_path(path: Path) -> str:
        return "Z:" + str(path).replace("/", "\\")

    def run(self, command_line: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run `command_line` under Wine. Once in a CI run Wine's cmd.exe ended with 1 and wrote
        nothing at all, and the same test passed in six runs after it (a launcher always writes a
        document or the stand-in's report): such a run is tried once more, and a second one fails
        the test as before."""
        hexed = "".join(f"{ord(c):04x}" for c in command_line)
        assert all(ord(c) < 0x10000 for c in command_line)
        for _ in range(2):
            proc = subprocess.run(["wine", str(self.bin_dir / "spawn.exe"), hexed], capture_output=True,
                                  env={**self.env, **(env or {})}, timeout=120, check=False)
            if proc.returncode == 0 or proc.stdout or proc.stderr:
                break
        return proc

    def run_bat(self, bat: Path, params: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """The way PRTG starts a batch file: cmd.exe /s/c ""<bat>" PARAMS"."""
        return self.run(f'cmd.exe /s/c ""{self.windows_path(bat)}" {params}"', env)


def _decode(hexed: str) -> str:
    return "".join(chr(int(hexed[i:i + 4], 16)) for i in range(0, len(hexed), 4))


def echo_report(stdout: bytes) -> Dict[str, List[str]]:
    report: Dict[str, List[str]] = {"CMDLINE": [], "CRTARG": [], "W32ARG": [], "ENV": []}
    for line in stdout.decode("ascii").splitlines():
        tag, _, hexed = line.partition(":")
        report[tag].append(_decode(hexed))
    return report


@pytest.fixture(scope="session")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    missing = [tool for tool in ("wine", MINGW) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: run tools/install-wine (as root) for the .bat tests")
    bin_dir = tmp_path_factory.mktemp("wine-bin")
    for name, source in (("python.exe", ECHO_C), ("spawn.exe", SPAWN_C)):
        (bin_dir / f"{name}.c").write_text(source, encoding="utf-8")
        subprocess.run([MINGW, "-municode", "-O2", "-Wall", "-o", str(bin_dir / name), str(bin_dir / f"{name}.c"),
                        "-lshell32"], check=True, timeout=120)
    w = Wine(bin_dir)
    if not (Path(WINEPREFIX) / "system.reg").exists():  # once per machine (tools/install-wine does it too)
        subprocess.run(["wineboot", "--init"], env=w.env, capture_output=True, timeout=600, check=False)
    # Keep one wineserver (and Wine's background services) up between the tests, holding none of
    # the tests' pipes: otherwise every run waits ~2 s for them to close its stdout. It exits by
    # itself 30 s after the last Wine process.
    subprocess.run(["wineserver", "-p30"], env=w.env, timeout=60, check=False)
    subprocess.run(["wine", "cmd.exe", "/c", "exit"], env=w.env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)
    proc = w.run("cmd.exe /c echo wine-ok")
    if b"wine-ok" not in proc.stdout:
        pytest.skip(f"wine cannot run cmd.exe here: {proc.stdout!r} {proc.stderr[-500:]!r}")
    yield w


@pytest.fixture
def exexml(tmp_path: Path) -> Path:
    """A copy of the .bat in a folder named like PRTG's (spaces, parentheses)."""
    folder = tmp_path / "PRTG Network Monitor (x86)" / "Custom Sensors" / "EXEXML"
    folder.mkdir(parents=True)
    shutil.copy2(SCRIPTS / "prtg-roundtrip.bat", folder / "prtg-roundtrip.bat")
    return folder


def _stand_in(wine: Wine, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wine.bin_dir / "python.exe", path)
    return path


def prtg_quote(value: str) -> str:
    """How a PRTG user writes one value in the Parameters field: in double quotes, \\" inside
    (the MSVC runtime's rules, which Python's own argument parsing follows)."""
    out, backslashes = ['"'], 0
    for c in value:
        if c == "\\":
            backslashes += 1
            continue
        out.append("\\" * (2 * backslashes + 1) + c if c == '"' else "\\" * backslashes + c)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


WINE_PERCENT = pytest.mark.xfail(
    strict=True,
    reason="Wine's cmd.exe expands %...% again inside the text that %* (and %1) substitute; "
    "cmd.exe on Windows does not. Needs the real Windows probe (docs/launchers.md)",
)

BAT_CASES = [
    pytest.param(["--smtp-host", "mail.example.com", "--imap-port", "993", "--format", "prtg-json"], False,
                 id="unquoted-simple"),
    pytest.param(["a;b,c=d", "(x86)", "x)y", "!x!", "*.txt"], False, id="unquoted-harmless"),
    pytest.param(["with space", "  two  spaces  ", "x!y!", "!bang", "a^b", "a^^b", "a&b", "a && b", "a|b",
                  "<in >out", "(x86)", "a)b", "a;b,c=d", "*", "?"], True, id="cmd-specials"),
    pytest.param(['say "hi"', 'say "hi" & bye', "C:\\dir\\", "\\\\server\\share", 'end\\"', 'two "" quotes'],
                 True, id="quotes-backslashes"),
    pytest.param(["", "Grüße €", "日本語", "$HOME", "`id`", "'single'"], True, id="empty-unicode-other"),
    pytest.param(["100%"], True, id="percent-lone", marks=WINE_PERCENT),
    pytest.param(["%NO_SUCH_VARIABLE%", "50% or 60%"], True, id="percent-pairs", marks=WINE_PERCENT),
    pytest.param(["%%"], True, id="percent-double", marks=WINE_PERCENT),
]


@pytest.mark.parametrize(("values", "quoted"), BAT_CASES)
def test_bat_passes_every_parameter_intact_under_wine(wine, exexml, values, quoted):
    python = _stand_in(wine, exexml / ".venv" / "Scripts" / "python.exe")
    params = " ".join(prtg_quote(v) if quoted else v for v in values)
    proc = wine.run_bat(exexml / "prtg-roundtrip.bat", params)
    assert proc.returncode == 0, proc
    report = echo_report(proc.stdout)
    # What cmd.exe handed to python.exe: the Parameters text, character for character ...
    assert report["CMDLINE"] == [f'"{wine.windows_path(python)}" -m prtg_roundtrip {params}']
    # ... which Windows' and the C runtime's argument parsing turn back into the values.
    assert report["W32ARG"][1:] == ["-m", "prtg_roundtrip", *values]
    assert report["CRTARG"][1:] == ["-m", "prtg_roundtrip", *values]
    assert report["ENV"] == ["utf-8", "1", "1"]


def test_bat_passes_the_exit_code_through_under_wine(wine, exexml):
    _stand_in(wine, exexml / ".venv" / "Scripts" / "python.exe")
    assert wine.run_bat(exexml / "prtg-roundtrip.bat", "--x", {"ECHO_EXIT": "3"}).returncode == 3


def test_bat_search_order_under_wine(wine, exexml, tmp_path):
    bat = exexml / "prtg-roundtrip.bat"

    def chosen(env: Optional[Dict[str, str]] = None) -> List[str]:
        proc = wine.run_bat(bat, '--a "b c"', env)
        assert proc.returncode == 0, proc
        if proc.stdout.startswith(b"CMDLINE:"):
            return echo_report(proc.stdout)["CMDLINE"]
        return [assert_document(proc.stdout, "prtg-xml").text]

    # 4. python.exe on PATH, if prtg-roundtrip is installed in it (WINEPATH extends Wine's PATH)
    on_path = _stand_in(wine, tmp_path / "pydir" / "python.exe")
    winepath = {"WINEPATH": wine.windows_path(on_path.parent)}
    assert chosen(winepath) == [f'"{wine.windows_path(on_path)}" -m prtg_roundtrip --a "b c"']
    text = chosen({**winepath, "ECHO_CHECK_EXIT": "1"})[0]
    assert f"{wine.windows_path(on_path)} (prtg-roundtrip is not installed in it)" in text

    # 3. PRTG's bundled Python, in the prefix's C:\Program Files (x86)
    prtg_dir = Path(WINEPREFIX) / "drive_c" / "Program Files (x86)" / "PRTG Network Monitor"
    try:
        _stand_in(wine, prtg_dir / "python" / "python.exe")
        bundled = "C:\\Program Files (x86)\\PRTG Network Monitor\\python\\python.exe"
        assert chosen(winepath) == [f'"{bundled}" -m prtg_roundtrip --a "b c"']
        text = chosen({"ECHO_CHECK_EXIT": "1"})[0]
        assert f"{bundled} (prtg-roundtrip is not installed in it)" in text
    finally:
        shutil.rmtree(prtg_dir, ignore_errors=True)

    # 2. an installed prtg-roundtrip.exe on PATH, called directly
    command = _stand_in(wine, tmp_path / "exedir" / "prtg-roundtrip.exe")
    both = {"WINEPATH": f"{wine.windows_path(command.parent)};{wine.windows_path(on_path.parent)}"}
    assert chosen(both) == [f'"{wine.windows_path(command)}" --a "b c"']

    # 1. the venvs next to the launcher: prtg-roundtrip-venv, and .venv before it
    named = _stand_in(wine, exexml / "prtg-roundtrip-venv" / "Scripts" / "python.exe")
    assert chosen(both) == [f'"{wine.windows_path(named)}" -m prtg_roundtrip --a "b c"']
    dot = _stand_in(wine, exexml / ".venv" / "Scripts" / "python.exe")
    assert chosen(both) == [f'"{wine.windows_path(dot)}" -m prtg_roundtrip --a "b c"']

    # 0. PRTG_ROUNDTRIP_PYTHON over everything, quotes around the value allowed
    override = _stand_in(wine, tmp_path / "other (x86)" / "python.exe")
    quoted = {"PRTG_ROUNDTRIP_PYTHON": f'"{wine.windows_path(override)}"'}
    assert chosen(quoted) == [f'"{wine.windows_path(override)}" -m prtg_roundtrip --a "b c"']
    text = chosen({"PRTG_ROUNDTRIP_PYTHON": "C:\\no such\\python.exe"})[0]
    assert "PRTG_ROUNDTRIP_PYTHON=C:\\no such\\python.exe (no such file" in text


def test_bat_finds_prtgs_own_python_and_runs_the_pyz_under_wine(wine, exexml, tmp_path):
    """PRTG's Python relative to Custom Sensors\\EXEXML, then the registry's PRTG folder, then
    py -3, then python; each runs the installed package, else the .pyz beside the launcher."""
    bat = exexml / "prtg-roundtrip.bat"
    pyz = wine.windows_path(exexml / "prtg-roundtrip.pyz")

    def chosen(env: Optional[Dict[str, str]] = None) -> str:
        proc = wine.run_bat(bat, '--a "b c"', env)
        assert proc.returncode == 0, proc
        if proc.stdout.startswith(b"CMDLINE:"):
            return echo_report(proc.stdout)["CMDLINE"][0]
        return str(assert_document(proc.stdout, "prtg-xml").text)

    no_package = {"ECHO_CHECK_EXIT": "1"}
    # 3. PRTG's own Python, found from the launcher's folder: EXEXML\..\..\python\python.exe
    own = _stand_in(wine, exexml.parent.parent / "python" / "python.exe")
    assert chosen() == f'"{wine.windows_path(own)}" -m prtg_roundtrip --a "b c"'  # the installed package wins
    text = chosen(no_package)
    assert f"{wine.windows_path(own)} (prtg-roundtrip is not installed in it)" in text
    assert "Put prtg-roundtrip.pyz next to this launcher" in text
    (exexml / "prtg-roundtrip.pyz").write_bytes(b"")
    assert chosen(no_package) == f'"{wine.windows_path(own)}" -S "{pyz}" --a "b c"'
    own.unlink()

    # ... then the PRTG folder that the registry names (value exepath, trailing backslash or not)
    key = "HKLM\\SOFTWARE\\WOW6432Node\\Paessler\\PRTG Network Monitor"
    registered = _stand_in(wine, tmp_path / "Elsewhere (x86)" / "PRTG" / "python" / "python.exe")
    try:
        folder = wine.windows_path(registered.parent.parent)
        # The value as typed in quotes: a trailing backslash is written twice before the quote.
        for quoted in (f'"{folder}"', f'"{folder}\\\\"'):
            added = wine.run(f'reg.exe add "{key}" /v exepath /t REG_SZ /d {quoted} /f')
            assert added.returncode == 0, added
            stored = wine.run(f'reg.exe query "{key}" /v exepath').stdout.decode().strip()
            assert stored.endswith(folder + ("\\" if quoted.endswith('\\"') else "")), stored
            assert chosen(no_package) == f'"{wine.windows_path(registered)}" -S "{pyz}" --a "b c"'
    finally:
        wine.run(f'reg.exe delete "{key}" /f')

    # 4. py.exe -3 on PATH, then python.exe on PATH
    launcher = _stand_in(wine, tmp_path / "pydir" / "py.exe")
    python = _stand_in(wine, tmp_path / "pythondir" / "python.exe")
    both = {"WINEPATH": f"{wine.windows_path(launcher.parent)};{wine.windows_path(python.parent)}"}
    assert chosen(both) == f'"{wine.windows_path(launcher)}" -3 -m prtg_roundtrip --a "b c"'
    assert chosen({**both, **no_package}) == f'"{wine.windows_path(launcher)}" -3 -S "{pyz}" --a "b c"'
    only_python = {"WINEPATH": wine.windows_path(python.parent)}
    assert chosen({**only_python, **no_package}) == f'"{wine.windows_path(python)}" -S "{pyz}" --a "b c"'
    (exexml / "prtg-roundtrip.pyz").unlink()
    text = chosen({**both, **no_package})
    assert f"{wine.windows_path(launcher)} (prtg-roundtrip is not installed in it)" in text
    assert f"{wine.windows_path(python)} (prtg-roundtrip is not installed in it)" in text


@pytest.mark.parametrize(("params", "fmt"), [
    ("", "prtg-xml"),  # EXE/Script Advanced with an empty Parameters field (issue 11)
    ('--imap-host "a & b"', "prtg-xml"),
    ("--format prtg-json", "prtg-json"),
    ("--format=prtg-json", "prtg-json"),
    ('--subject-text "" --format "prtg-json" --to "x <y>"', "prtg-json"),
    ("--format script-v2", "script-v2"),
], ids=["no-params", "xml", "json", "json-equals", "json-quoted", "v2"])
def test_bat_without_python_prints_an_error_document_under_wine(wine, exexml, params, fmt):
    proc = wine.run_bat(exexml / "prtg-roundtrip.bat", params)
    assert proc.returncode == 0
    doc = assert_document(proc.stdout, fmt)
    assert doc.text.startswith("prtg-roundtrip launcher: no Python found (looked in: ")
    for place in (".venv\\Scripts\\python.exe", "prtg-roundtrip-venv\\Scripts\\python.exe",
                  "prtg-roundtrip.exe on PATH", "PRTG Network Monitor\\python\\python.exe", "py.exe on PATH",
                  "python.exe on PATH"):
        assert place in doc.text
    assert wine.windows_path(exexml) in doc.text


def test_bat_without_python_text_format_under_wine(wine, exexml):
    proc = wine.run_bat(exexml / "prtg-roundtrip.bat", "--format text")
    assert proc.returncode == 1
    assert proc.stdout.decode().startswith("prtg-roundtrip launcher: no Python found")


def test_bat_error_document_escapes_an_ampersand_folder_under_wine(wine, tmp_path):
    folder = tmp_path / "R&D (x86) a;b"
    folder.mkdir()
    shutil.copy2(SCRIPTS / "prtg-roundtrip.bat", folder / "prtg-roundtrip.bat")
    for fmt in ("prtg-xml", "prtg-json"):
        proc = wine.run_bat(folder / "prtg-roundtrip.bat", f"--format {fmt}")
        assert wine.windows_path(folder) in assert_document(proc.stdout, fmt).text


@pytest.mark.xfail(strict=True, reason="Wine's chcp cannot switch to code page 65001, so cmd.exe's echo "
                   "writes non-ASCII in the OEM code page; on Windows `chcp 65001` makes it UTF-8 (unverified)")
def test_bat_error_document_is_utf8_for_a_non_ascii_folder_under_wine(wine, tmp_path):
    folder = tmp_path / "Überwachung"
    folder.mkdir()
    shutil.copy2(SCRIPTS / "prtg-roundtrip.bat", folder / "prtg-roundtrip.bat")
    proc = wine.run_bat(folder / "prtg-roundtrip.bat", "--format prtg-json")
    assert "Überwachung" in assert_document(proc.stdout, "prtg-json").text


def test_windows_scripts_have_crlf_line_ends_and_are_ascii():
    for name in ("prtg-roundtrip.bat", "prtg-roundtrip.ps1"):
        data = (SCRIPTS / name).read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n") > 10, f"{name}: not CRLF (see scripts/.gitattributes)"
        data.decode("ascii")
    assert b"\r" not in (SCRIPTS / "prtg-roundtrip.sh").read_bytes()
    assert os.access(SCRIPTS / "prtg-roundtrip.sh", os.X_OK)


# --------------------------------------------------------------------------------------------
# The offline bundle


def _index_reachable(tmp_path: Path) -> Optional[str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "--dest", str(tmp_path / "probe"), "defusedxml"], capture_output=True, timeout=300,
                          check=False)
    return None if proc.returncode == 0 else proc.stderr.decode(errors="replace")[-400:]


def test_offline_bundle_builds_installs_without_index_and_runs(tmp_path):
    """Slow (about a minute): needs the package index for the build, nothing for the install."""
    problem = _index_reachable(tmp_path)
    if problem is not None:
        pytest.skip(f"the package index cannot be reached, so no bundle can be built: {problem}")
    out = tmp_path / "dist"
    build = subprocess.run([sys.executable, str(ROOT / "tools" / "bundle.py"), "--out-dir", str(out)],
                           capture_output=True, timeout=1800, check=False)
    assert build.returncode == 0, build.stderr.decode(errors="replace")[-3000:]
    (archive,) = out.glob("prtg-roundtrip-bundle-*.zip")
    version = archive.name[len("prtg-roundtrip-bundle-"):-len(".zip")]
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unpacked")
    top = f"prtg-roundtrip-bundle-{version}/"
    assert all(n.startswith(top) for n in names)
    wheels = {n[len(top) + len("wheels/"):] for n in names if n.startswith(top + "wheels/")}
    for tag in ("cp39", "cp310", "cp311", "cp312", "cp313"):
        assert any(w.startswith("markupsafe-") and f"-{tag}-{tag}-win_amd64" in w for w in wheels), tag
        assert any(w.startswith("markupsafe-") and f"-{tag}-{tag}-manylinux" in w for w in wheels), tag
    assert any(w.lower().startswith("pywin32_ctypes-") for w in wheels)  # keyring's Windows-only dependency
    assert f"prtg_roundtrip-{version}-py3-none-any.whl" in wheels
    for script in ("prtg-roundtrip.bat", "prtg-roundtrip.ps1", "prtg-roundtrip.sh", "prtg_roundtrip_python.py"):
        assert top + "scripts/" + script in names
    assert top + "INSTALL.md" in names

    bundle = tmp_path / "unpacked" / top
    install_md = (bundle / "INSTALL.md").read_text(encoding="utf-8")
    assert "python -m pip install --no-index --find-links wheels prtg-roundtrip" in install_md

    # A fresh venv beside the Linux launcher, installed from the bundle alone: no index, no pip config.
    venv = bundle / "scripts" / "prtg-roundtrip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    offline = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "prtg_", "PYTHON"))}
    offline["PIP_CONFIG_FILE"] = os.devnull
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                              "--no-index", "--find-links", "wheels", "prtg-roundtrip"],
                             cwd=bundle, env=offline, capture_output=True, timeout=600, check=False)
    assert install.returncode == 0, install.stdout.decode()[-2000:] + install.stderr.decode()[-2000:]

    helped = subprocess.run([str(venv / "bin" / "prtg-roundtrip"), "--help"], env=offline, cwd="/",
                            capture_output=True, timeout=120, check=False)
    assert helped.returncode == 0 and helped.stdout.startswith(b"usage: prtg-roundtrip"), helped
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import prtg_roundtrip, keyring, jinja2, "
                               "imapclient, defusedxml; print(prtg_roundtrip.__file__)"], env=offline, cwd="/",
                              capture_output=True, timeout=120, check=False)
    assert imported.returncode == 0 and str(venv).encode() in imported.stdout, imported  # not this checkout

    launched = subprocess.run(["/bin/sh", str(bundle / "scripts" / "prtg-roundtrip.sh"), "--format", "prtg-json"],
                              env={"PATH": "/nonexistent"}, cwd="/", capture_output=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr
    assert "launcher" not in assert_document(launched.stdout, "prtg-json").text

"""prtg-roundtrip.pyz (tools/build-pyz), run the way a probe with only a stock Python runs it.

The archive is built once per session from requirements/runtime.txt (the first build on a
machine downloads the wheels, hash-checked, into build/pyz-wheels). It is run with the oldest
and the newest supported Python found (pyenv's or the system's 3.9 and 3.13, as tools/run-tests
finds them; this interpreter when neither is there), with and without `-I`, against the real
local mail stack, in every output format; through the .sh launcher, the Python Script Advanced
entry, and the .bat launcher under Wine.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import ROOT, base_args, check_output, with_options
from test_launchers import Wine, wine  # noqa: F401 - `wine` is the session fixture of the .bat tests

SCRIPTS = ROOT / "scripts"
FORMATS = ["prtg-xml", "prtg-json", "script-v2", "text"]


def find_python(version: str) -> Optional[str]:
    """tools/run-tests' finder: pyenv's versions/X.Y.*/bin/pythonX.Y, then pythonX.Y on PATH."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in [*sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}")),
                      shutil.which(f"python{version}")]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


PYTHONS: Dict[str, str] = {}
for _name, _version in (("oldest", "3.9"), ("newest", "3.13")):
    PYTHONS[_name] = find_python(_version) or sys.executable


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "prtg-roundtrip.pyz"
    build = subprocess.run([sys.executable, str(ROOT / "tools" / "build-pyz"), "--out", str(out)],
                           capture_output=True, timeout=900, check=False)
    assert build.returncode == 0, build.stderr.decode(errors="replace")[-3000:]
    return out


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("prtg_", "PRTG_RT_PYZ"))}
    env.update(extra)
    return env


def run_pyz(command: List[str], args: List[str], fmt: str, stdin: bytes = b"",
            env: Optional[Dict[str, str]] = None) -> Any:
    """Run a command that ends in the .pyz (or a launcher); the document must pass the checker."""
    proc = subprocess.run([*command, *args], input=stdin, capture_output=True, cwd="/", timeout=120,
                          env=env or clean_env(), check=False)
    stdout = proc.stdout.decode("utf-8")
    assert "Traceback" not in stdout and "Traceback" not in proc.stderr.decode("utf-8", "replace"), proc
    assert proc.returncode == 0, proc
    if fmt == "text":
        return stdout
    problems = check_output.check(stdout, fmt)
    assert not problems, f"document rejected by the checker: {problems}\n{stdout}"
    return check_output.parse(stdout, fmt)


def test_pyz_is_reproducible_pure_and_complete(pyz, tmp_path):
    again = tmp_path / "again.pyz"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build-pyz"), "--out", str(again)],
                   capture_output=True, timeout=900, check=True)
    assert again.read_bytes() == pyz.read_bytes()  # same input, same bytes

    with zipfile.ZipFile(pyz) as zf:
        # Python reads every entry of the archive's directory on each run: the package and its
        # dependencies sit in one entry, payload.zip; the start-up module is there as source and
        # as bytecode for each Python the build found (these tests' Pythons among them).
        outer_names = zf.namelist()
        fixed = ["LICENSE", "__main__.py", "payload.zip", "prtg_roundtrip_pyz.py", "prtg_roundtrip_pyz_cold.py",
                 "prtg_roundtrip_pyz_start.py"]
        assert [n for n in outer_names if not n.endswith(".pyc")] == fixed
        compiled = [n for n in outer_names if n.endswith(".pyc")]
        assert set(compiled) >= {f"prtg_roundtrip_pyz_start_{_tag(p).replace('-', '_')}.pyc" for p in PYTHONS.values()}
        assert all(re.fullmatch(r"prtg_roundtrip_pyz_start_cpython_3\d+\.pyc", n) for n in compiled), compiled
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}  # read without zlib
        outer = zf.infolist()
        payload = zipfile.ZipFile(io.BytesIO(zf.read("payload.zip")))
    names = payload.namelist()
    infos = payload.infolist() + outer
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    platform_specific = [n for n in names if n.endswith((".so", ".pyd", ".dll", ".dylib", ".pyc", ".exe"))]
    assert platform_specific == []
    for needed in ("prtg_roundtrip/cli.py",
                   "prtg_roundtrip/templates/prtg.xml.j2", "imapclient/__init__.py", "jinja2/__init__.py",
                   "markupsafe/_native.py", "defusedxml/__init__.py", "keyring/__init__.py",
                   "win32ctypes/__init__.py", "LICENSE"):
        assert needed in names, needed
    assert any(n.startswith("keyring-") and n.endswith(".dist-info/entry_points.txt") for n in names)
    assert not any(n.startswith(("cryptography/", "secretstorage/", "jeepney/", "cffi/")) for n in names)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("isolated", [False, True], ids=["site", "isolated"])
@pytest.mark.parametrize("which", sorted(PYTHONS))
def test_pyz_round_trip_in_every_format(stack, pyz, which, isolated, fmt):
    python = [PYTHONS[which], *(["-I"] if isolated else [])]
    args = with_options(base_args(stack), format=fmt)
    if fmt == "script-v2":  # Script v2: the parameters arrive on stdin, none on the command line
        doc = run_pyz([*python, str(pyz)], [], fmt, stdin=(shlex.join(args) + "\n").encode())
    else:
        doc = run_pyz([*python, str(pyz)], args, fmt)
    if fmt == "text":
        assert doc.startswith("OK"), doc
        assert "Total" in doc
    else:
        assert not doc.error, doc.text
        assert set(doc.channel_names) >= {"Total", "Response Time (SMTP)", "Response Time (IMAP)"}


@pytest.mark.parametrize("fmt", ["prtg-xml", "script-v2"])
def test_pyz_round_trip_without_a_cache(stack, pyz, fmt):
    """No cache: the payload is unpacked into a temporary folder for the run."""
    args = with_options(base_args(stack), format=fmt)
    env = clean_env(PRTG_RT_PYZ_CACHE="off")
    command = [PYTHONS["oldest"], "-I", str(pyz)]
    if fmt == "script-v2":
        doc = run_pyz(command, [], fmt, stdin=(shlex.join(args) + "\n").encode(), env=env)
    else:
        doc = run_pyz(command, args, fmt, env=env)
    assert not doc.error, doc.text


def _tag(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _start_module(proc: subprocess.CompletedProcess) -> str:
    note = "prtg-roundtrip.pyz: start-up module "
    (line,) = [line for line in proc.stderr.decode().splitlines() if line.startswith(note)]
    return line[len(note):]


@pytest.mark.parametrize("which", sorted(PYTHONS))
def test_pyz_starts_from_bytecode_made_by_the_build_else_from_source(pyz, tmp_path, which):
    """No start-up code is compiled at start-up where the build had the Python; elsewhere the
    source serves, with the same result."""
    python = PYTHONS[which]
    compiled = f"prtg_roundtrip_pyz_start_{_tag(python).replace('-', '_')}"
    assert _start_module(_version_run(python, pyz, tmp_path / "state")) == compiled
    source_only = tmp_path / "source-only.pyz"
    with zipfile.ZipFile(pyz) as zf, zipfile.ZipFile(source_only, "w") as out:
        for info in zf.infolist():
            if not info.filename.endswith(".pyc"):
                out.writestr(info, zf.read(info))
    assert _start_module(_version_run(python, source_only, tmp_path / "state")) == "prtg_roundtrip_pyz_start"


def test_pyz_dependencies_come_before_site_packages(stack, pyz, tmp_path):
    """A jinja2 in the interpreter's (user) site-packages does not replace the archive's."""
    python = PYTHONS["newest"]
    user_base = tmp_path / "userbase"
    site = subprocess.run([python, "-c", "import site; print(site.getusersitepackages())"], capture_output=True,
                          text=True, check=True, env=clean_env(PYTHONUSERBASE=str(user_base))).stdout.strip()
    planted = Path(site) / "jinja2"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise ImportError('a planted jinja2')\n")
    env = clean_env(PYTHONUSERBASE=str(user_base))
    assert b"a planted jinja2" in subprocess.run([python, "-c", "import jinja2"], capture_output=True, env=env,
                                                 check=False).stderr  # it is on the path
    doc = run_pyz([python, str(pyz)], with_options(base_args(stack), format="prtg-json"), "prtg-json", env=env)
    assert not doc.error, doc.text


def _import_note(proc: subprocess.CompletedProcess) -> str:
    note = "prtg-roundtrip.pyz: importing from "
    lines = [line for line in proc.stderr.decode().splitlines() if line.startswith(note)]
    assert len(lines) == 1, proc.stderr
    return lines[0][len(note):]


def _version_run(python: str, pyz: Path, state: Path, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([python, str(pyz), "--version"], capture_output=True, cwd="/", timeout=120, check=False,
                          env=clean_env(PRTG_RT_STATE_DIR=str(state), PRTG_RT_PYZ_DEBUG="1", **extra))
    assert proc.returncode == 0 and proc.stdout.startswith(b"prtg-roundtrip "), proc
    return proc


@pytest.mark.parametrize("which", sorted(PYTHONS))
def test_pyz_unpacks_once_into_a_private_cache_with_bytecode(pyz, tmp_path, which):
    python = PYTHONS[which]
    state = tmp_path / "state"
    (state / "pyz").mkdir(mode=0o700, parents=True)
    state.chmod(0o700)
    unused = state / "pyz" / "0123456789abcdef0123-cpython-39"
    recent = state / "pyz" / "0123456789abcdef4567-cpython-39"
    for folder, age in ((unused, 31 * 86400), (recent, 29 * 86400)):
        (folder / "prtg_roundtrip").mkdir(parents=True)
        folder.chmod(0o700)
        os.utime(folder, (time.time() - age, time.time() - age))
    first = Path(_import_note(_version_run(python, pyz, state)))
    assert not unused.exists()  # a build no run has used for 30 days is removed when one is unpacked
    assert recent.exists()
    shutil.rmtree(recent)
    assert first.parent == state / "pyz"
    tag = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert first.name.endswith("-" + tag)
    assert list((first / "prtg_roundtrip" / "__pycache__").glob(f"cli.{tag}*.pyc"))
    assert list((first / "imapclient" / "__pycache__").glob(f"*.{tag}*.pyc"))
    for folder in (state, state / "pyz", first):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert [p.name for p in (state / "pyz").iterdir()] == [first.name]  # no temporary folder left

    # Later runs import from there, and unpack nothing again; each says when it used the folder.
    marker = first / "prtg_roundtrip" / "marker-of-this-test"
    marker.write_text("x")
    os.utime(first, (time.time() - 40 * 86400, time.time() - 40 * 86400))
    assert _import_note(_version_run(python, pyz, state)) == str(first)
    assert marker.exists()
    warm = subprocess.run([python, str(pyz), "--version"], capture_output=True, cwd="/", timeout=120, check=False,
                          env=clean_env(PRTG_RT_STATE_DIR=str(state)))
    assert warm.returncode == 0
    assert time.time() - first.stat().st_mtime < 3600


PLANTED = "planted code ran"


def _plant(cache: Path) -> None:
    """Code in the cache folder that says when it runs (as someone who could write there would)."""
    init = cache / "prtg_roundtrip" / "__init__.py"
    init.write_text(init.read_text() + f"\nimport sys\nsys.stderr.write({PLANTED!r} + '\\n')\n")
    for compiled in (cache / "prtg_roundtrip" / "__pycache__").glob("__init__.*.pyc"):
        compiled.unlink()


def _temporary_run(python: str, pyz: Path, state: Path, tmp: Path, **extra: str) -> str:
    """A run that must import from a new temporary folder in `tmp`, removed when it ends; and
    the same without PRTG_RT_PYZ_DEBUG (the start-up module's own path) must not run planted code."""
    proc = _version_run(python, pyz, state, TMPDIR=str(tmp), **extra)
    folder = Path(_import_note(proc))
    assert folder.parent == tmp and folder.name.startswith("prtg-roundtrip-pyz-"), folder
    assert PLANTED.encode() not in proc.stderr
    assert list(tmp.iterdir()) == []  # removed at exit
    quiet = subprocess.run([python, str(pyz), "--version"], capture_output=True, cwd="/", timeout=120,
                           check=False, env=clean_env(PRTG_RT_STATE_DIR=str(state), TMPDIR=str(tmp), **extra))
    assert quiet.returncode == 0 and quiet.stdout.startswith(b"prtg-roundtrip "), quiet
    assert PLANTED.encode() not in quiet.stderr
    return str(folder)


def test_pyz_runs_from_a_temporary_folder_when_the_cache_is_unsafe_or_off(pyz, tmp_path):
    python = PYTHONS["newest"]
    state = tmp_path / "state"
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    (cache,) = [Path(_import_note(_version_run(python, pyz, state)))]
    _plant(cache)
    warm = subprocess.run([python, str(pyz), "--version"], capture_output=True, cwd="/", timeout=120, check=False,
                          env=clean_env(PRTG_RT_STATE_DIR=str(state)))
    assert PLANTED.encode() in warm.stderr  # the warm path imports from the cache (this test's premise)

    _temporary_run(python, pyz, state, tmp, PRTG_RT_PYZ_CACHE="off")
    cache_root = state / "pyz"
    cache_root.chmod(0o777)  # another local account could have planted code there: not used
    try:
        _temporary_run(python, pyz, state, tmp)
    finally:
        cache_root.chmod(0o700)
    state.chmod(0o757)
    try:
        _temporary_run(python, pyz, state, tmp)
    finally:
        state.chmod(0o700)
    cache.chmod(0o775)
    try:
        _temporary_run(python, pyz, state, tmp)
    finally:
        cache.chmod(0o700)

    # A cache folder that is a link (to a folder with someone's code) is not followed.
    (cache_root / "elsewhere").mkdir(mode=0o700)
    cache.rename(cache_root / "elsewhere" / "moved")
    cache.symlink_to(cache_root / "elsewhere" / "moved")
    _temporary_run(python, pyz, state, tmp)

    # A state folder that cannot be made: a temporary folder, and the run still answers.
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    _temporary_run(python, pyz, blocked / "state", tmp)


def test_pyz_removes_only_its_own_stale_temporary_folders(pyz, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    day_old = time.time() - 86400 - 60
    stale, fresh, other = tmp / "prtg-roundtrip-pyz-stale", tmp / "prtg-roundtrip-pyz-fresh", tmp / "someone-else"
    for folder in (stale, fresh, other):
        (folder / "prtg_roundtrip").mkdir(parents=True)
    target = tmp_path / "not-in-tmp"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp / "prtg-roundtrip-pyz-link"
    link.symlink_to(target)
    for path in (stale, other, link):
        os.utime(path, (day_old, day_old), follow_symlinks=False)
    _version_run(PYTHONS["newest"], pyz, tmp_path / "state", TMPDIR=str(tmp), PRTG_RT_PYZ_CACHE="off")
    assert sorted(p.name for p in tmp.iterdir()) == ["prtg-roundtrip-pyz-fresh", "prtg-roundtrip-pyz-link",
                                                     "someone-else"]
    assert (target / "keep").exists()


@pytest.mark.parametrize("fmt", ["prtg-xml", "prtg-json", "script-v2", "nagios"])
def test_pyz_that_cannot_be_unpacked_gives_one_error_document(pyz, tmp_path, fmt):
    """A damaged archive (or no writable folder at all): no traceback, one document saying so."""
    damaged = tmp_path / "prtg-roundtrip.pyz"
    with zipfile.ZipFile(pyz) as zf, zipfile.ZipFile(damaged, "w") as out:
        for info in zf.infolist():
            data = zf.read(info)
            out.writestr(info, data[:1000] if info.filename == "payload.zip" else data)
    args = [] if fmt == "script-v2" else ["--format", fmt]
    env = clean_env(PRTG_RT_STATE_DIR=str(tmp_path / "state"),
                    **({"PRTG_ROUNDTRIP_SCRIPT_V2": "1"} if fmt == "script-v2" else {}))
    proc = subprocess.run([PYTHONS["oldest"], str(damaged), *args], capture_output=True, cwd="/", timeout=120,
                          env=env, check=False)
    assert b"Traceback" not in proc.stdout + proc.stderr, proc
    assert proc.returncode == (3 if fmt == "nagios" else 0), proc
    text = proc.stdout.decode()
    if fmt == "nagios":
        assert text.startswith("ROUNDTRIP UNKNOWN - prtg-roundtrip.pyz: cannot start: cannot unpack"), text
        return
    assert not check_output.check(text, fmt), text
    doc = check_output.parse(text, fmt)
    assert doc.error and "cannot unpack" in doc.text and "BadZipFile" in doc.text, doc.text


@pytest.mark.parametrize("cache", ["warm", "off"])
def test_pyz_replaced_during_a_run_does_not_break_it(stack, pyz, tmp_path, cache):
    """An update that replaces the .pyz while a run is going: the run reads nothing more from
    the archive after its start (the cache folder, or its temporary folder), and answers."""
    archive = tmp_path / "prtg-roundtrip.pyz"
    shutil.copy2(pyz, archive)
    env = clean_env(PRTG_RT_STATE_DIR=str(tmp_path / "state"))
    if cache == "off":
        env["PRTG_RT_PYZ_CACHE"] = "off"
    python = PYTHONS["newest"]
    subprocess.run([python, str(archive), "--version"], env=env, cwd="/", capture_output=True, timeout=120, check=True)
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # accepts, and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    silent.settimeout(60)
    try:
        args = with_options(base_args(stack), smtp_port=str(silent.getsockname()[1]), smtp_timeout="3",
                            format="prtg-json")
        run = subprocess.Popen([python, str(archive), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env, cwd="/")
        connection, _ = silent.accept()  # the run is under way, waiting for the SMTP greeting
        replacement = tmp_path / "update.pyz"
        replacement.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
        os.replace(replacement, archive)
        stdout, stderr = run.communicate(timeout=120)
        connection.close()
    finally:
        silent.close()
    assert b"Traceback" not in stdout + stderr, stderr
    assert run.returncode == 0
    assert not check_output.check(stdout.decode(), "prtg-json"), stdout
    doc = check_output.parse(stdout.decode(), "prtg-json")
    assert doc.error and "SMTP" in doc.text, doc.text


@pytest.mark.skipif(sys.platform == "win32", reason="the Linux keyring backend is the one left out")
def test_pyz_keyring_reference_without_backend_says_what_is_missing(stack, pyz):
    args = with_options(base_args(stack), imap_password="keyring:prtg-roundtrip/probe", format="prtg-json")
    doc = run_pyz([PYTHONS["newest"], "-I", str(pyz)], args, "prtg-json")
    assert doc.error
    assert "keyring:prtg-roundtrip/probe" in doc.text
    assert "prtg-roundtrip.pyz carries no compiled code" in doc.text and "secretstorage" in doc.text
    assert "env:" in doc.text and "file:" in doc.text


def test_sh_launcher_runs_the_pyz_beside_it_with_a_stock_python3(stack, pyz, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    shutil.copy2(SCRIPTS / "prtg-roundtrip.sh", folder / "prtg-roundtrip.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(PYTHONS["oldest"])  # a Python without the package
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "PRTG_RT_STATE_DIR": os.environ["PRTG_RT_STATE_DIR"]}
    launcher = ["/bin/sh", str(folder / "prtg-roundtrip.sh")]
    doc = run_pyz(launcher, with_options(base_args(stack), format="prtg-json"), "prtg-json", env=env)
    assert doc.error and "Put prtg-roundtrip.pyz next to this launcher" in doc.text

    shutil.copy2(pyz, folder / "prtg-roundtrip.pyz")
    for fmt in ("prtg-json", "prtg-xml"):
        doc = run_pyz(launcher, with_options(base_args(stack), format=fmt), fmt, env=env)
        assert not doc.error, doc.text
    # python3 -S: the interpreter's site-packages (and what their .pth files and sitecustomize
    # do) play no part in a run of the .pyz.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.stderr.write('site ran\\n')\n")
    proc = subprocess.run([*launcher, "--version"], capture_output=True, cwd="/", timeout=120, check=False,
                          env=dict(env, PYTHONPATH=str(site)))
    assert proc.returncode == 0 and proc.stdout.startswith(b"prtg-roundtrip "), proc
    assert b"site ran" not in proc.stderr
    assert b"site ran" in subprocess.run([str(bin_dir / "python3"), "-c", "pass"], capture_output=True,
                                         env=dict(env, PYTHONPATH=str(site)), check=True).stderr
    args = with_options(base_args(stack), format="script-v2")
    doc = run_pyz(launcher, [], "script-v2", stdin=(shlex.join(args) + "\n").encode(), env=env)
    assert not doc.error, doc.text


def test_python_entry_imports_the_package_from_a_pyz_beside_it(stack, pyz, tmp_path):
    folder = tmp_path / "python"
    folder.mkdir()
    shutil.copy2(SCRIPTS / "prtg_roundtrip_python.py", folder / "prtg_roundtrip_python.py")
    data = {"host": base_args(stack)[1], "params": shlex.join(base_args(stack)[2:])}
    # -I: no site-packages, no working folder on sys.path: only the .pyz can provide the package.
    command = [PYTHONS["oldest"], "-I", str(folder / "prtg_roundtrip_python.py"), json.dumps(data)]
    doc = run_pyz(command, [], "prtg-json")
    assert doc.error and "cannot import prtg_roundtrip" in doc.text and "prtg-roundtrip.pyz" in doc.text

    shutil.copy2(pyz, folder / "prtg-roundtrip.pyz")
    doc = run_pyz(command, [], "prtg-json")
    assert not doc.error, doc.text


FORWARD_C = r"""
#include <windows.h>
#include <stdlib.h>
#include <wchar.h>

/* python.exe stand-in for PRTG's own Python under Wine. "-c ..." (the launcher's question "is
   the package installed in you?") is answered no. Any other command line is handed on unchanged
   (after the program's name) to FORWARD_TO, a script that runs the real Linux Python. Wine does
   not wait for Unix programs, so their exit code is lost; stdout is inherited, and the caller
   reads it to the end. */
int wmain(int argc, wchar_t **argv) {
  if (argc > 1 && wcscmp(argv[1], L"-c") == 0) return 1;
  static wchar_t target[4096];
  if (!GetEnvironmentVariableW(L"FORWARD_TO", target, 4096)) return 126;
  const wchar_t *rest = GetCommandLineW();
  if (*rest == L'"') { rest++; while (*rest && *rest != L'"') rest++; if (*rest) rest++; }
  else { while (*rest && *rest != L' ' && *rest != L'\t') rest++; }
  wchar_t *line = calloc(wcslen(target) + wcslen(rest) + 3, sizeof(wchar_t));
  wcscpy(line, L"\"");
  wcscat(line, target);
  wcscat(line, L"\"");
  wcscat(line, rest);
  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  ZeroMemory(&si, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  if (!CreateProcessW(NULL, line, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) return 127;
  WaitForSingleObject(pi.hProcess, INFINITE);
  return 0;
}
"""

LINUX_PYTHON = """#!/bin/sh
# The real Linux Python, with Windows paths (Z:\\...) made POSIX paths again.
n=$#
for a do
  case $a in 'Z:\\'*) a=$(printf '%s' "${a#Z:}" | tr '\\\\' /) ;; esac
  set -- "$@" "$a"
done
shift $n
exec "REAL_PYTHON" "$@"
"""


@pytest.fixture
def prtg_folder(tmp_path: Path, wine: Wine) -> Path:  # noqa: F811 - wine: the fixture
    """PRTG's program folder as on a probe: python\\python.exe without the package (a stand-in
    that hands the real Linux Python whatever it is asked to run) and Custom Sensors\\EXEXML
    with the .bat."""
    root = tmp_path / "PRTG Network Monitor (x86)"
    exexml = root / "Custom Sensors" / "EXEXML"
    exexml.mkdir(parents=True)
    shutil.copy2(SCRIPTS / "prtg-roundtrip.bat", exexml / "prtg-roundtrip.bat")
    python = root / "python" / "python.exe"
    python.parent.mkdir()
    source = tmp_path / "forward.c"
    source.write_text(FORWARD_C, encoding="utf-8")
    subprocess.run(["x86_64-w64-mingw32-gcc", "-municode", "-O2", "-Wall", "-o", str(python), str(source)],
                   check=True, timeout=120)
    linux = tmp_path / "linux-python.exe"
    linux.write_text(LINUX_PYTHON.replace("REAL_PYTHON", PYTHONS["newest"]), encoding="utf-8")
    linux.chmod(0o755)
    return root


def test_bat_launcher_runs_the_pyz_with_prtgs_python_under_wine(stack, pyz, prtg_folder, wine, tmp_path):  # noqa: F811
    bat = prtg_folder / "Custom Sensors" / "EXEXML" / "prtg-roundtrip.bat"
    env = {"PRTG_RT_STATE_DIR": os.environ["PRTG_RT_STATE_DIR"],
           "FORWARD_TO": wine.windows_path(tmp_path / "linux-python.exe")}
    params = " ".join(f'"{a}"' for a in with_options(base_args(stack), format="prtg-json"))
    proc = wine.run_bat(bat, params, env)
    assert proc.returncode == 0, proc
    doc = check_output.parse(proc.stdout.decode("utf-8"), "prtg-json")
    assert doc.error and "python\\python.exe (prtg-roundtrip is not installed in it)" in doc.text

    # With the .pyz beside the launcher, PRTG's Python runs it: a real round trip.
    shutil.copy2(pyz, bat.parent / "prtg-roundtrip.pyz")
    for fmt in ("prtg-json", "prtg-xml"):
        params = " ".join(f'"{a}"' for a in with_options(base_args(stack), format=fmt))
        proc = wine.run_bat(bat, params, env)
        assert proc.returncode == 0, proc
        stdout = proc.stdout.decode("utf-8")
        assert not check_output.check(stdout, fmt), proc
        doc = check_output.parse(stdout, fmt)
        assert not doc.error, doc.text
        assert "Total" in doc.channel_names

#!/usr/bin/env python3
"""Start-up cost of prtg-roundtrip.pyz against the installed package: prints figures, not a test.

    python3 tools/bench_startup.py [--runs 21] [--python PYTHON] [--pyz dist/prtg-roundtrip.pyz]

Every figure is the median (min and max beside it) of --runs wall times of one process, from
just before it is started to its exit, runs of the variants interleaved; beside it the median
CPU time (user + system) of the same runs, which other load on the machine disturbs far less.
Cases:

    help      prtg-roundtrip --help
    refused   a parameter the sensor refuses before any connection (an unknown option)
    trip      a real round trip in plain text against a local Postfix + Dovecot
              (tools/mailstack.py, port base --port-base, stopped at the end)

Variants, all with the same interpreter (--python, default: this one's base interpreter, i.e.
the one a venv was made from), each in a virtual environment made from it, so that what the base
installation's site-packages holds (.pth files) weighs on neither:

    installed     PYTHON -m prtg_roundtrip from a virtual environment (build/bench-venv) that holds
                  the package (pip install --no-deps ., not editable) and requirements/runtime.txt,
                  its site-packages compiled to bytecode first (compileall), and run without
                  PYTHONDONTWRITEBYTECODE: the installed package at its best.
    pyz           PYTHON prtg-roundtrip.pyz from a venv with nothing installed (build/bench-venv-bare),
                  a stock Python; the .pyz's cache warm (one run first)
    pyz -I        PYTHON -I prtg-roundtrip.pyz (isolated: no site-packages, no PYTHON* variables)
    pyz no cache  PRTG_RT_PYZ_CACHE=off: imports from the archive, compiling from source each run

PYTHONDONTWRITEBYTECODE is removed from every variant's environment (this machine sets it). The
.pyz's cache lives in a temporary PRTG_RT_STATE_DIR made for the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import mailstack  # noqa: E402


def base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def bench_venv(python: str, where: Path) -> str:
    """A venv with the package installed from this checkout (not editable) and compiled."""
    venv = where / f"bench-venv-{_version(python)}"
    interpreter = venv / "bin" / "python"
    if not interpreter.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(interpreter), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements" / "runtime.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True)  # this checkout, as it is now
    purelib = subprocess.run([str(interpreter), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([str(interpreter), "-m", "compileall", "-q", purelib], check=True)
    return str(interpreter)


def bare_venv(python: str, where: Path) -> str:
    """A venv of the same interpreter with nothing installed: a stock Python, as on a probe."""
    venv = where / f"bench-venv-bare-{_version(python)}"
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def _version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def timed(command: Sequence[str], env: Dict[str, str]) -> Tuple[float, float]:
    """(wall time, CPU time = user + system) of one process, in ms. CPU time is what the process
    itself spent: much less disturbed by other load on the machine than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd="/", capture_output=True, stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not proc.stdout.strip():
        raise SystemExit(f"bench_startup: no output from {' '.join(command)}: {proc.stderr.decode()[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed * 1000, cpu * 1000


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--python", default=base_python(), help="the interpreter (default: this one's base)")
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "prtg-roundtrip.pyz")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("PRTG_RT_PORT_BASE", "14500")))
    parser.add_argument("--dir", default=None, help="the mail stack's folder (default /tmp/prtg-rt-bench-PORTBASE)")
    parser.add_argument("--cases", default="help,refused,trip")
    args = parser.parse_args(argv)

    if not args.pyz.is_file():
        subprocess.run([sys.executable, str(ROOT / "tools" / "build-pyz"), "--out", str(args.pyz)], check=True)
    installed = bench_venv(args.python, ROOT / "build")
    stock = bare_venv(args.python, ROOT / "build")
    state = tempfile.mkdtemp(prefix="prtg-rt-bench-state-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("prtg_")}
    env["PRTG_RT_STATE_DIR"] = state
    variants = {
        "installed": ([installed, "-m", "prtg_roundtrip"], env),
        "pyz": ([stock, str(args.pyz)], env),
        "pyz -I": ([stock, "-I", str(args.pyz)], env),
        "pyz no cache": ([stock, str(args.pyz)], dict(env, PRTG_RT_PYZ_CACHE="off")),
    }
    cases: Dict[str, List[str]] = {
        "help": ["--help"],
        "refused": ["--imap-pass", "x", "--format", "prtg-json"],
    }
    stack = None
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    try:
        if "trip" in wanted:
            stack = mailstack.MailStack(args.dir or f"/tmp/prtg-rt-bench-{args.port_base}", args.port_base)
            info: Dict = stack.start()
            user, ports = info["users"]["probe"], info["ports"]
            cases["trip"] = [
                "--smtp-host", ports["smtp_plain"]["host"], "--smtp-port", str(ports["smtp_plain"]["port"]),
                "--smtp-tls", "off", "--imap-host", ports["imap_plain"]["host"],
                "--imap-port", str(ports["imap_plain"]["port"]), "--imap-tls", "off",
                "--imap-user", user["login"], "--imap-password", user["password"],
                "--from", info["users"]["sender"]["address"], "--to", user["address"], "--helo", "bench.test",
                "--format", "prtg-json",
            ]
        version = "Python " + _version(args.python)
        print(f"{version} ({args.python}); {args.runs} runs each, in ms: median (min-max) of the wall time "
              "of one process, then the median of its CPU time (user + system)")
        print(f"{'case':<9} " + " ".join(f"{name:>30}" for name in variants))
        for case in wanted:
            for command, variant_env in variants.values():  # warm: caches, page cache, the .pyz's unpacking
                timed([*command, *cases[case]], variant_env)
            wall: Dict[str, List[float]] = {name: [] for name in variants}
            cpu: Dict[str, List[float]] = {name: [] for name in variants}
            for _ in range(args.runs):
                for name, (command, variant_env) in variants.items():
                    w, c = timed([*command, *cases[case]], variant_env)
                    wall[name].append(w)
                    cpu[name].append(c)
            cells = [f"{statistics.median(w):6.1f} ({min(w):5.1f}-{max(w):6.1f}) cpu {statistics.median(c):5.1f}"
                     for w, c in zip(wall.values(), cpu.values())]
            print(f"{case:<9} " + " ".join(f"{cell:>30}" for cell in cells))
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

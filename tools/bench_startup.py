#!/usr/bin/env python3
"""Start-up cost of prtg-roundtrip.pyz against the installed package: prints figures, not a test.

    python3 tools/bench_startup.py [--runs 21] [--python PYTHON] [--pyz dist/prtg-roundtrip.pyz]
                                   [--cases help,refused,trip] [--instructions [--instruction-runs 3]]
                                   [--json FILE]

Builds dist/prtg-roundtrip.pyz (tools/build-pyz) if it is missing, and the virtual environments
below in build/. For every case, one warm-up run of each variant, then --runs rounds, each round
running every variant once (the variants interleaved, so that a change of load on the machine
weighs on all of them alike). Printed for each case, one row per variant:

    wall      median (min-max) of the wall time of one process, from just before it is started
              to its exit, in ms
    cpu       the median CPU time (user + system) of the same runs, in ms: other load on the
              machine disturbs it far less than the wall time, but on a shared 2-core machine
              its quartiles still lie some +-15 ms apart
    cpu diff  (not for "installed") the median of the paired differences, this variant's CPU time
              minus that of "installed" in the same round, with a rough 95 % interval from order
              statistics: the sorted differences at the 1-based ranks n/2 - 1.96*sqrt(n)/2 and
              1 + n/2 + 1.96*sqrt(n)/2, rounded (clamped to 1..n; with few runs it is the whole
              range). This is the figure for "costs no more than the installed package": the
              interval lies below or around 0, or it does not.
    instr     with --instructions: the median of --instruction-runs counts of the user-space
              instructions the process executed (valgrind's cachegrind, "I refs"), in millions,
              and its difference to "installed" in millions and in percent. The count hardly
              varies between runs (min-max is printed beside it), so differences of a fraction
              of a percent show, which the times cannot show. Each run is

                  PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no
                      --cachegrind-out-file=/dev/null --log-file=TEMP COMMAND...

              with the same environment (plus PYTHONHASHSEED=0), working folder, stdin and
              captured stdout as the timed runs, after them (the .pyz's cache is warm). It counts
              the interpreter's process only, not the kernel's work nor other processes (the mail
              servers). A run is some 30 times slower under valgrind (seconds each; the round
              trip still completes within the sensor's timeouts, which are seconds, and is
              checked for an error document like the timed runs). Without valgrind on PATH this
              is skipped with a message, and the rest is measured.

A round trip (case trip) whose output is a PRTG error document stops the bench with its text:
its figures would be those of another code path.

Cases:

    help      prtg-roundtrip --help
    refused   a parameter the sensor refuses before any connection (an unknown option)
    trip      a real round trip in plain text against a local Postfix + Dovecot
              (tools/mailstack.py, port base --port-base, folder --dir, stopped at the end)

Variants, all with the same interpreter (--python, default: this one's base interpreter, i.e.
the one a venv was made from), each in a virtual environment made from it, so that what the base
installation's site-packages holds (.pth files) weighs on none:

    installed     PYTHON -m prtg_roundtrip from a virtual environment (build/bench-venv-X.Y) that
                  holds the package (pip install --no-deps ., not editable, reinstalled from this
                  checkout every time) and requirements/runtime.txt, its site-packages compiled
                  to bytecode first (compileall), and run without PYTHONDONTWRITEBYTECODE: the
                  installed package at its best. The reference of every difference.
    installed (entry script)
                  build/bench-venv-X.Y/bin/prtg-roundtrip, the console script pip installs (what
                  a user of the installed package runs), same venv
    pyz           PYTHON prtg-roundtrip.pyz from a venv with nothing installed
                  (build/bench-venv-bare-X.Y), a stock Python; the .pyz's cache warm (one run first)
    pyz -S        PYTHON -S prtg-roundtrip.pyz: as the launchers run it (no site module: the
                  interpreter's site-packages and their .pth files cost nothing)
    pyz -I        PYTHON -I prtg-roundtrip.pyz (isolated: no user site-packages, no PYTHON* variables)
    pyz no cache  PRTG_RT_PYZ_CACHE=off: unpacks the payload into a temporary folder and imports
                  from there, compiling from source, each run

PYTHONDONTWRITEBYTECODE is removed from every variant's environment (this machine sets it), and
so are the prtg_* variables PRTG sets. The .pyz's cache lives in a temporary PRTG_RT_STATE_DIR
made for the run and removed at the end.

--json FILE writes every figure, and the runs behind them, as one JSON object:

    {"python": "3.13", "interpreter": ..., "runs": N, "instruction_runs": N or null,
     "instructions_skipped": null or why, "variants": [names, in order],
     "cases": {case: {variant: {"wall_ms": {"median", "min", "max", "runs": [...]},
                                "cpu_ms": {"median", "min", "max", "runs": [...]},
                                "cpu_diff_ms": null for "installed", else
                                    {"median", "low", "high", "confidence": 0.95, "runs": [...]},
                                "instructions": null without --instructions, else
                                    {"median", "min", "max", "runs": [...],
                                     "diff", "diff_percent"} (counts; diff against "installed")}}}}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import mailstack  # noqa: E402

REFERENCE = "installed"
_I_REFS = re.compile(r"^==\d+==\s+I\s+refs:\s+([\d,]+)\s*$", re.MULTILINE)
_SECRET_OPTIONS = ("--imap-password", "--imap-pass", "--smtp-password", "--smtp-pass")


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


def shown(command: Sequence[str]) -> str:
    """The command as text for a message, the value of a password option replaced by ***."""
    out: List[str] = []
    hide = False
    for word in command:
        out.append("***" if hide else word)
        hide = word in _SECRET_OPTIONS
    return " ".join(out)


def parse_instruction_refs(log: str) -> Optional[int]:
    """The instruction count of cachegrind's summary line ("==123== I   refs:      314,756,503"),
    or None if the text has none. With several (children traced), the first."""
    found = _I_REFS.search(log)
    return int(found.group(1).replace(",", "")) if found else None


def median_interval(values: Sequence[float], z: float = 1.96) -> Tuple[float, float, float]:
    """(median, low, high): the median of values and a rough distribution-free confidence interval
    for it (about 95 % for z=1.96) from order statistics: the sorted values at the 1-based ranks
    n/2 - z*sqrt(n)/2 and 1 + n/2 + z*sqrt(n)/2, each rounded to the nearest rank and clamped to
    1..n (for n below about 6 that is the whole range)."""
    if not values:
        raise ValueError("median_interval of no values")
    ordered = sorted(values)
    n = len(ordered)
    half_width = z * math.sqrt(n) / 2
    low_rank = min(n, max(1, math.floor(n / 2 - half_width + 0.5)))
    high_rank = min(n, max(1, math.floor(1 + n / 2 + half_width + 0.5)))
    return statistics.median(ordered), ordered[low_rank - 1], ordered[high_rank - 1]


def paired_differences(values: Sequence[float], reference: Sequence[float]) -> List[float]:
    """values[i] - reference[i] for each round i (both lists in the order of the rounds)."""
    if len(values) != len(reference):
        raise ValueError("paired_differences of lists of different lengths")
    return [round(v - r, 3) for v, r in zip(values, reference)]


def prtg_error(stdout: bytes) -> Optional[str]:
    """The text of a PRTG error document ({"prtg": {"error": 1, "text": ...}}, --format prtg-json),
    None for any other output."""
    try:
        doc = json.loads(stdout.decode("utf-8", "replace"))
    except ValueError:
        return None
    prtg = doc.get("prtg") if isinstance(doc, dict) else None
    if isinstance(prtg, dict) and str(prtg.get("error", "0")) not in ("0", ""):
        return str(prtg.get("text", ""))
    return None


def _run(command: Sequence[str], env: Dict[str, str], check_error: bool) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(command, env=env, cwd="/", capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if not proc.stdout.strip():
        raise SystemExit(f"bench_startup: no output from {shown(command)}: {proc.stderr.decode()[-800:]}")
    if check_error:
        error = prtg_error(proc.stdout)
        if error is not None:
            raise SystemExit(f"bench_startup: {shown(command)} ended in an error document: {error}")
    return proc


def timed(command: Sequence[str], env: Dict[str, str], check_error: bool = False) -> Tuple[float, float]:
    """(wall time, CPU time = user + system) of one process, in ms. CPU time is what the process
    itself spent: much less disturbed by other load on the machine than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    _run(command, env, check_error)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(elapsed * 1000, 3), round(cpu * 1000, 3)


def instructions(command: Sequence[str], env: Dict[str, str], check_error: bool = False) -> int:
    """The user-space instructions one process executed, counted by cachegrind (see the docstring)."""
    with tempfile.TemporaryDirectory(prefix="prtg-rt-bench-vg-") as tmp:
        log = Path(tmp) / "cachegrind.log"
        vg = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
              f"--log-file={log}"]
        proc = _run([*vg, *command], dict(env, PYTHONHASHSEED="0"), check_error)
        text = log.read_text(errors="replace") if log.exists() else ""
    count = parse_instruction_refs(text)
    if count is None:
        raise SystemExit(f"bench_startup: no 'I refs' line from valgrind for {shown(command)}: "
                         f"{text[-800:]}{proc.stderr.decode()[-400:]}")
    return count


def _spread(values: Sequence[float]) -> Dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def _signed(value: float, digits: int = 1) -> str:
    return f"{value:+.{digits}f}"


def format_row(case: str, name: str, fig: Dict[str, Any]) -> str:
    """One printed row of the table (columns as in header())."""
    wall, cpu, diff, instr = fig["wall_ms"], fig["cpu_ms"], fig["cpu_diff_ms"], fig["instructions"]
    wall_cell = f"{wall['median']:.1f} ({wall['min']:.1f}-{wall['max']:.1f})"
    diff_cell = f"{_signed(diff['median'])} [{_signed(diff['low'])}, {_signed(diff['high'])}]" if diff else ""
    row = f"{case:<8} {name:<24} {wall_cell:>23} {cpu['median']:7.1f}  {diff_cell:<26}"
    if instr is not None:
        row += f" {instr['median'] / 1e6:7.1f} ({instr['min'] / 1e6:.1f}-{instr['max'] / 1e6:.1f})"
        if name != REFERENCE:
            row += f" {_signed(instr['diff'] / 1e6)} M ({_signed(instr['diff_percent'], 2)} %)"
    return row.rstrip()


def header(with_instructions: bool) -> str:
    line = f"{'case':<8} {'variant':<24} {'wall (min-max)':>23} {'cpu':>7}  {'cpu diff [95 %]':<26}"
    if with_instructions:
        line += " instr. M (min-max), diff"
    return line.rstrip()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="rounds of timed runs (default 21)")
    parser.add_argument("--python", default=base_python(), help="the interpreter (default: this one's base)")
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "prtg-roundtrip.pyz")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("PRTG_RT_PORT_BASE", "14500")))
    parser.add_argument("--dir", default=None, help="the mail stack's folder (default /tmp/prtg-rt-bench-PORTBASE)")
    parser.add_argument("--cases", default="help,refused,trip")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions under valgrind's cachegrind")
    parser.add_argument("--instruction-runs", type=int, default=3, help="cachegrind runs per variant (default 3)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every figure as JSON to FILE")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.instruction_runs < 1:
        parser.error("--runs and --instruction-runs must be at least 1")

    skipped: Optional[str] = None
    if args.instructions and shutil.which("valgrind") is None:
        skipped = "valgrind not found on PATH (Debian: apt-get install valgrind)"
        print(f"bench_startup: instruction counts skipped: {skipped}", flush=True)
    count_instructions = args.instructions and skipped is None

    if not args.pyz.is_file():
        subprocess.run([sys.executable, str(ROOT / "tools" / "build-pyz"), "--out", str(args.pyz)], check=True)
    installed = bench_venv(args.python, ROOT / "build")
    entry_script = str(Path(installed).parent / "prtg-roundtrip")
    stock = bare_venv(args.python, ROOT / "build")
    state = tempfile.mkdtemp(prefix="prtg-rt-bench-state-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("prtg_")}
    env["PRTG_RT_STATE_DIR"] = state
    variants = {
        REFERENCE: ([installed, "-m", "prtg_roundtrip"], env),
        "installed (entry script)": ([entry_script], env),
        "pyz": ([stock, str(args.pyz)], env),
        "pyz -S": ([stock, "-S", str(args.pyz)], env),
        "pyz -I": ([stock, "-I", str(args.pyz)], env),
        "pyz no cache": ([stock, str(args.pyz)], dict(env, PRTG_RT_PYZ_CACHE="off")),
    }
    cases: Dict[str, List[str]] = {
        "help": ["--help"],
        "refused": ["--imap-pass", "x", "--format", "prtg-json"],
    }
    stack = None
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in (*cases, "trip")]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)} (help, refused, trip)")
    version = _version(args.python)
    report: Dict[str, Any] = {
        "python": version, "interpreter": args.python, "runs": args.runs,
        "instruction_runs": args.instruction_runs if count_instructions else None,
        "instructions_skipped": skipped if args.instructions else "not asked for (--instructions)",
        "variants": list(variants), "cases": {},
    }
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
        print(f"Python {version} ({args.python}); {args.runs} rounds, the variants interleaved. In ms: the wall "
              "time of one process, median (min-max); its CPU time (user + system), median; the median of the")
        print(f"paired CPU differences to '{REFERENCE}' with a rough 95 % interval"
              + (f"; instructions, median (min-max) of {args.instruction_runs} cachegrind runs, in millions, "
                 f"and the difference to '{REFERENCE}'" if count_instructions else ""))
        print(header(count_instructions), flush=True)
        for case in wanted:
            check = case == "trip"
            for command, variant_env in variants.values():  # warm: caches, page cache, the .pyz's unpacking
                timed([*command, *cases[case]], variant_env, check)
            wall: Dict[str, List[float]] = {name: [] for name in variants}
            cpu: Dict[str, List[float]] = {name: [] for name in variants}
            for _ in range(args.runs):
                for name, (command, variant_env) in variants.items():
                    w, c = timed([*command, *cases[case]], variant_env, check)
                    wall[name].append(w)
                    cpu[name].append(c)
            counts: Dict[str, List[int]] = {name: [] for name in variants}
            if count_instructions:
                for _ in range(args.instruction_runs):
                    for name, (command, variant_env) in variants.items():
                        counts[name].append(instructions([*command, *cases[case]], variant_env, check))
            figures: Dict[str, Any] = {}
            for name in variants:
                diffs = paired_differences(cpu[name], cpu[REFERENCE])
                median, low, high = median_interval(diffs)
                figures[name] = {
                    "wall_ms": _spread(wall[name]), "cpu_ms": _spread(cpu[name]),
                    "cpu_diff_ms": None if name == REFERENCE else
                    {"median": median, "low": low, "high": high, "confidence": 0.95, "runs": diffs},
                    "instructions": None,
                }
                if count_instructions:
                    ref = statistics.median(counts[REFERENCE])
                    own = statistics.median(counts[name])
                    figures[name]["instructions"] = dict(
                        _spread(counts[name]), diff=own - ref, diff_percent=(own - ref) / ref * 100)
            report["cases"][case] = figures
            for name in variants:
                print(format_row(case, name, figures[name]), flush=True)
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(state, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

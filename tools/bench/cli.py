"""The command line: arguments, the sections in order, the table; ``oauth2`` as a subcommand."""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from . import oauth2
from .bigmailbox import bench_bigmailbox
from .compare import bench_compare
from .concurrent import bench_concurrent
from .figures import Results, print_results
from .lag import bench_lag
from .overhead import bench_overhead
from .paths import bench_paths
from .procs import prepare_bytecode
from .stack import Bench, load_mailstack
from .util import ROOT, BenchError, progress

SECTIONS = ("lag", "paths", "overhead", "bigmailbox", "concurrent")
ORDER = ("lag", "paths", "overhead", "concurrent", "bigmailbox")  # the order they run in
RUNNERS: Dict[str, Callable[[Bench], None]] = {
    "lag": bench_lag, "paths": bench_paths, "overhead": bench_overhead, "concurrent": bench_concurrent,
    "bigmailbox": bench_bigmailbox,
}  # fmt: skip


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/bench",
        description="Benchmark the round-trip sensor against the local mail stack (see tools/bench/__init__.py "
        "for what each figure means).",
        epilog="'python3 tools/bench oauth2 [--help]' runs the OAuth2 cost benchmark instead (its own options).",
    )
    p.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--port-base", type=int, default=14000, help="mail stack port base (default 14000)")
    p.add_argument("--dir", help="mail stack directory (default /tmp/prtg-roundtrip-bench-PORTBASE)")
    p.add_argument("--keep-stack", action="store_true", help="leave the mail stack running at the end")
    p.add_argument("--probe-command", help="another probe command to compare with (a template, see the docs)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the sensor (default: this one)")
    p.add_argument("--messages", type=int, default=50_000, help="messages in the big mailbox (default 50000)")
    p.add_argument("--concurrency", type=int, default=20, help="sensors started at once (default 20)")
    p.add_argument("--relay-delay", type=float, default=2.0,
                   help="seconds the relay holds mail for the delayed lag and paths rows; 0 skips them (default 2)")
    p.add_argument("--relay-port", type=int, help="port of that relay (default port base + 99)")
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure at the end")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if not 1 <= args.runs <= 1000:
        p.error("--runs must be 1 to 1000")
    if not 1 <= args.concurrency <= 200:
        p.error("--concurrency must be 1 to 200")
    if not 0 <= args.messages <= 1_000_000:
        p.error("--messages must be 0 to 1000000")
    if not 0 <= args.relay_delay <= 60:
        p.error("--relay-delay must be 0 to 60 seconds")
    args.dir = args.dir or f"/tmp/prtg-roundtrip-bench-{args.port_base}"
    return args


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["oauth2"]:
        return oauth2.main(words[1:])
    bench_started = time.monotonic()
    args = parse_args(words)
    # The inotify thread stamps deliveries; let it have the GIL within 0.5 ms, not 5 ms.
    sys.setswitchinterval(0.0005)
    results = Results()
    results.meta.update(
        runs=args.runs, sections=args.sections, port_base=args.port_base, dir=args.dir,
        python=args.python, bench_python=sys.version.split()[0], started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        cpus=os.cpu_count(), load_before=_load(),
    )  # fmt: skip
    probe_import = "import prtg_roundtrip, imapclient, jinja2; print(prtg_roundtrip.__version__)"
    check = subprocess.run([args.python, "-c", probe_import], cwd=str(ROOT), capture_output=True, text=True,
                           check=False, timeout=60)
    if check.returncode != 0:
        print(f"bench: {args.python} cannot import the sensor and its dependencies:\n{check.stderr}", file=sys.stderr)
        return 2
    results.meta["sensor_version"] = check.stdout.strip()
    mailstack = load_mailstack()
    stack = mailstack.MailStack(args.dir, args.port_base)
    created = not Path(args.dir).exists()
    status = 0
    try:
        progress(f"starting the mail stack in {args.dir} (port base {args.port_base})")
        info = stack.start()
        bench = Bench(args, info, results)
        results.note("setup", prepare_bytecode(args.python, bench.env))
        for user in ("probe", "other"):
            left = bench.clear_inbox(user)
            if left:
                results.note("setup", f"{user}'s INBOX held {left} message(s) at the start: expunged")
        for name in ORDER:
            if name in args.sections:
                section_started = time.monotonic()
                RUNNERS[name](bench)
                results.meta[f"{name}_seconds"] = round(time.monotonic() - section_started, 1)
        if args.probe_command:
            bench_compare(bench, args.probe_command)
    except (BenchError, RuntimeError, OSError, imaplib.IMAP4.error) as exc:
        results.note("aborted", f"{type(exc).__name__}: {exc}")
        status = 1
    except KeyboardInterrupt:
        results.note("aborted", "interrupted")
        status = 130
    finally:
        if not args.keep_stack:
            progress("stopping the mail stack")
            stack.stop()
            if created:
                shutil.rmtree(args.dir, ignore_errors=True)
    wall = time.monotonic() - bench_started
    results.meta.update(wall_seconds=round(wall, 1), load_after=_load())
    header = (f"prtg-roundtrip benchmark: sensor {results.meta.get('sensor_version', '?')}, {args.python} "
          f"(Python {results.meta['bench_python']}), {args.runs} runs per figure, {os.cpu_count()} CPUs, "
          f"stack {args.dir} port base {args.port_base}")
    print_results(results, header, wall, args.keep_stack, args.json)
    return status

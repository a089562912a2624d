"""overhead: what a run costs outside its own Total (wall time), in CPU time and in memory."""

from __future__ import annotations

from typing import Dict, List

from . import parsers
from .sensor import SensorRun
from .stack import Bench
from .util import progress

OVERHEAD_TARGET_MS = 80.0  # issue 9 (bench.py had 100)
CPU_TARGET_MS = 90.0  # issue 9: CPU per plain round trip
RSS_TARGET_MIB = 40.0

OVERHEAD_PARTS = (
    ("startup", "spawn -> transcript origin: interpreter, imports, options"),
    ("arm", "origin -> SMTP connect: IMAP connect, login, SELECT"),
    ("after", "found -> last transcript line: delete, sweep, LOGOUT"),
    ("exit", "last line -> exit: render (jinja2), interpreter exit"),
)


def bench_overhead(b: Bench) -> None:
    r = b.results
    for tls in (False, True):
        label = "TLS (STARTTLS both legs, --ca-file)" if tls else "plain text"
        key = "tls" if tls else "plain"
        b.must(b.sensor(b.sensor_argv(tls=tls)), f"overhead warm-up ({label})")
        overhead, rss, wall, total, cpu = [], [], [], [], []
        parts: Dict[str, List[float]] = {}
        for i in range(b.runs):
            progress(f"overhead: run {i + 1}/{b.runs} {label}")
            run = b.must(b.sensor(b.sensor_argv(tls=tls)), f"overhead {label}")
            overhead.append(run.proc.wall_ms - run.total)
            rss.append(run.proc.maxrss_kib / 1024.0)
            wall.append(run.proc.wall_ms)
            total.append(run.total)
            if run.proc.cpu_ms is not None:
                cpu.append(run.proc.cpu_ms)
            # The same run with --verbose: its transcript splits the overhead into phases.
            verbose = b.must(b.sensor(b.sensor_argv(tls=tls, verbose=True)), f"overhead {label} --verbose")
            for name, value in overhead_parts(verbose).items():
                parts.setdefault(name, []).append(value)
        r.stat("overhead", f"overhead.{key}.overhead_ms", f"overhead = wall - Total, {label}", "ms", overhead,
               OVERHEAD_TARGET_MS)
        r.stat("overhead", f"overhead.{key}.cpu_ms", f"CPU (user + system) per round trip, {label}", "ms", cpu,
               CPU_TARGET_MS if not tls else None)
        r.stat("overhead", f"overhead.{key}.peak_rss_mib", f"peak RSS, {label}", "MiB", rss, RSS_TARGET_MIB)
        r.stat("overhead", f"overhead.{key}.wall_ms", f"  process wall time, {label}", "ms", wall)
        r.stat("overhead", f"overhead.{key}.total_ms", f"  Total channel, {label}", "ms", total)
        for name, text in OVERHEAD_PARTS:
            r.stat("overhead", f"overhead.{key}.part.{name}_ms", f"    {text} (--verbose runs)", "ms",
                   parts.get(name, []))

    refused = ["--format", "prtg-json", "--smtp-port", "not-a-port"]
    references = (
        ("bare", "a bare interpreter (python -c pass)", [b.python, "-c", "pass"]),
        # The floor under the sensor's own code: the design card's libraries and the standard
        # modules a round trip needs, imported the way the sensor imports them (startup.py).
        ("libraries", "the libraries alone (" + LIBRARIES + ")",
         [b.python, "-c", LIBRARIES_CODE]),
        ("help", "--help", [b.python, "-m", "prtg_roundtrip", "--help"]),
        ("refused", "a refused parameter", [b.python, "-m", "prtg_roundtrip", *refused]),
    )
    for key, label, argv in references:
        b.run(argv)  # warm-up
        procs = []
        for i in range(b.runs):
            progress(f"overhead: run {i + 1}/{b.runs} {label}")
            procs.append(b.run(argv))
        if key == "refused":
            runs = [SensorRun.of(p) for p in procs]
            if not all(run.doc is not None and run.doc.error for run in runs):
                r.note("overhead", "the refused parameter did not always give an error document")
        r.stat("overhead", f"overhead.{key}.cpu_ms", f"  CPU (user + system), {label}", "ms",
               [p.cpu_ms for p in procs if p.cpu_ms is not None])
        r.stat("overhead", f"overhead.{key}.wall_ms", f"  process wall time, {label}", "ms", [p.wall_ms for p in procs])
        r.stat("overhead", f"overhead.{key}.peak_rss_mib", f"  peak RSS, {label}", "MiB",
               [p.maxrss_kib / 1024.0 for p in procs])
    for key, label, extra in (
        ("help", "--help", ["--help"]),
        ("refused", "a refused parameter", refused),
        ("run", "a plain-text round trip", b.sensor_argv()[3:]),
    ):
        import_times(b, key, label, [b.python, "-X", "importtime", "-m", "prtg_roundtrip", *extra])
    r.note("overhead", f"peak RSS is ru_maxrss and CPU is ru_utime + ru_stime from os.wait4 in a minimal spawner; "
           f"its own peak, {b.rss_floor_kib / 1024:.1f} MiB, is the lowest value an RSS reading can show")


LIBRARIES = "argparse, dataclasses, enum, json, logging, smtplib, ssl, uuid, email.policy, imapclient, jinja2"
LIBRARIES_CODE = f"from prtg_roundtrip.startup import prepare_imports\nprepare_imports()\nimport {LIBRARIES}"


def overhead_parts(run: SensorRun) -> Dict[str, float]:
    """Where the wall time outside Total goes, from a --verbose run's transcript."""
    stderr = run.proc.stderr
    origin = parsers.clock_origin(stderr)
    accepted = parsers.accepted_ms(stderr)
    connect = parsers.smtp_connect_ms(stderr)
    stamps = parsers.stamps(stderr)
    if origin is None or accepted is None or connect is None or not stamps:
        return {}
    found_ms = accepted + run.imap_ms
    return {
        "startup": (origin - run.proc.started) * 1000.0,
        "arm": connect,
        "after": stamps[-1] - found_ms,
        "exit": (run.proc.ended - origin) * 1000.0 - stamps[-1],
    }


def import_times(b: Bench, key: str, label: str, argv: List[str]) -> None:
    r = b.results
    samples = []
    for _ in range(b.runs):
        roots = parsers.parse_importtime(b.run(argv).stderr)
        if roots:
            samples.append(roots)
    if not samples:
        r.note("overhead", f"-X importtime of {label}: no output")
        return
    totals = [sum(n.cumulative_us for n in roots) / 1000.0 for roots in samples]
    ours = [sum(n.cumulative_us for n in roots if n.name.startswith("prtg_roundtrip")) / 1000.0 for roots in samples]
    r.stat("overhead", f"importtime.{key}.all_ms", f"  -X importtime {label}: all imports", "ms", totals)
    r.stat("overhead", f"importtime.{key}.prtg_roundtrip_ms", f"  -X importtime {label}: prtg_roundtrip*", "ms", ours)
    middle = sorted(range(len(samples)), key=lambda i: totals[i])[len(samples) // 2]
    roots = samples[middle]
    top = sorted(roots, key=lambda n: -n.cumulative_us)[:5]
    inside = sorted(parsers.first_foreign([n for n in roots if n.name.startswith("prtg_roundtrip")]),
                    key=lambda n: -n.cumulative_us)[:6]
    r.note("overhead", f"importtime {label} (median run), top level: "
           + ", ".join(f"{n.name} {n.cumulative_us / 1000:.1f}" for n in top) + " ms")
    r.note("overhead", f"importtime {label}, heaviest imports under prtg_roundtrip: "
           + (", ".join(f"{n.name} {n.cumulative_us / 1000:.1f}" for n in inside) or "none") + " ms")

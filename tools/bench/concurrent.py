"""concurrent: --concurrency (20) sensors started at once against the same INBOX."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from .figures import Figure
from .stack import Bench
from .util import progress, ratio

CONCURRENT_RATIO_TARGET = 10.0  # issue 9: median Total of 20 at once <= 10x a lone run's


def bench_concurrent(b: Bench) -> None:
    r = b.results
    n = int(b.args.concurrency)
    argv = b.sensor_argv(verbose=True)  # the transcripts show how many IMAP sessions overlapped
    b.must(b.sensor(argv), "concurrent warm-up")
    lone = []
    for i in range(b.runs):
        progress(f"concurrent: lone run {i + 1}/{b.runs}")
        lone.append(b.must(b.sensor(argv), "lone run").total)
    totals: List[float] = []
    walls: List[float] = []
    peaks: List[float] = []
    failures: Dict[str, int] = {}
    started = 0
    for i in range(b.runs):
        progress(f"concurrent: round {i + 1}/{b.runs}, {n} sensors at once")
        runs = b.sensors([argv] * n)
        sessions = [s for s in (run.imap_session() for run in runs) if s is not None]
        peaks.append(float(peak_overlap(sessions)))
        for run in runs:
            started += 1
            if run.ok:
                totals.append(run.total)
                walls.append(run.proc.wall_ms)
            else:
                failures[run.problem] = failures.get(run.problem, 0) + 1
    ok = len(totals)
    r.add(Figure("concurrent", "concurrent.succeeded", f"{n} sensors at once, {b.runs} rounds: succeeded", "runs",
                 shown=f"{ok}/{started}", passed=ok == started and started > 0, target_text="all"))
    r.stat("concurrent", "concurrent.total_ms", f"  Total, {n} at once", "ms", totals)
    r.stat("concurrent", "concurrent.lone_total_ms", "  Total, lone run", "ms", lone)
    times = ratio(totals, lone)
    fig = r.stat("concurrent", "concurrent.total_ratio", f"median Total {n} at once / lone", "x",
                 [times] if times is not None else [], CONCURRENT_RATIO_TARGET)
    fig.target_text = f"<= {CONCURRENT_RATIO_TARGET:g}x"
    r.stat("concurrent", "concurrent.wall_ms", f"  process wall time, {n} at once", "ms", walls)
    r.stat("concurrent", "concurrent.peak_imap_sessions", "  IMAP sessions open at the same time, peak per round",
           "count", peaks)
    for problem, count in sorted(failures.items(), key=lambda item: -item[1])[:5]:
        r.note("concurrent", f"{count}x failed: {problem}")
    left = b.message_count("probe")
    if left:
        r.note("concurrent", f"{left} message(s) left in probe's INBOX afterwards")


def peak_overlap(intervals: Sequence[Tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak

"""lag: how long after the message was really in the mailbox the sensor noticed it (plain text).

Also the measuring pieces the paths section reuses for every IMAP TLS mode: a sensor run with
--verbose, the inotify watch on the probe user's Maildir/new, and delivery/lag from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .sensor import SensorRun
from .stack import RELAY_OFFSET, Bench, DelayRelay, MaildirWatch
from .util import progress

LAG_TARGET_MS = 5.0


@dataclass
class Detected:
    """One --verbose run and, where its window held exactly one delivery, delivery and lag in ms."""

    run: SensorRun
    delivery_ms: Optional[float]
    lag_ms: Optional[float]


def delivery_and_lag(run: SensorRun, watch: MaildirWatch) -> Optional[Tuple[float, float]]:
    """(delivery, detection lag) in ms: accepted -> file in new/, and IMAP channel - delivery.

    None unless the run's transcript names the acceptance and exactly one file appeared in the
    watched new/ while the process ran.
    """
    accepted = run.accepted_at()
    seen = watch.between(run.proc.started, run.proc.ended)
    if accepted is None or len(seen) != 1:
        return None
    delivery = (seen[0] - accepted) * 1000.0
    return delivery, run.imap_ms - delivery


def detect(b: Bench, watch: MaildirWatch, what: str, **argv: Any) -> Detected:
    """One sensor run with --verbose (sensor_argv's keywords), measured against the watch."""
    run = b.must(b.sensor(b.sensor_argv(verbose=True, **argv)), what)
    measured = delivery_and_lag(run, watch)
    return Detected(run, *(measured if measured else (None, None)))


def detection_series(b: Bench, watch: MaildirWatch, variants: Mapping[str, Mapping[str, Any]],
                     what: str) -> Dict[str, List[Detected]]:
    """--runs rounds; each round runs every variant once, in order (so they interleave)."""
    out: Dict[str, List[Detected]] = {name: [] for name in variants}
    for i in range(b.runs):
        for name, argv in variants.items():
            progress(f"{what}: run {i + 1}/{b.runs} {name}")
            out[name].append(detect(b, watch, f"{what} {name}", **argv))
    return out


def known(values: List[Optional[float]]) -> List[float]:
    return [v for v in values if v is not None]


def how_seen(runs: List[Detected]) -> str:
    """e.g. '5x polling, 2x IDLE push'."""
    counts: Dict[str, int] = {}
    for d in runs:
        if d.lag_ms is not None:
            counts[d.run.detection] = counts.get(d.run.detection, 0) + 1
    return ", ".join(f"{n}x {k}" for k, n in sorted(counts.items())) or "none"


def start_relay(b: Bench) -> Optional[Tuple[DelayRelay, int]]:
    """The delaying relay in front of Postfix's plain port, or None with --relay-delay 0."""
    delay = float(b.args.relay_delay)
    if delay <= 0:
        return None
    port = b.args.relay_port or b.args.port_base + RELAY_OFFSET
    return DelayRelay(port, (b.host, b.port("smtp_plain")), delay), port


def bench_lag(b: Bench) -> None:
    watch = MaildirWatch(b.maildir("probe"))
    try:
        b.must(b.sensor(b.sensor_argv(verbose=True)), "lag warm-up")
        _lag_series(b, watch, "", None)
        relay = start_relay(b)
        if relay is not None:
            try:
                _lag_series(b, watch, "delayed", relay[1])
                if relay[0].failures:
                    b.results.note("lag", f"relay forwarding failures: {relay[0].failures[:3]}")
            finally:
                relay[0].close()
    finally:
        watch.close()


def _lag_series(b: Bench, watch: MaildirWatch, variant: str, relay_port: Optional[int]) -> None:
    r = b.results
    waits = ("auto", "poll")
    what = f"lag{' ' + variant if variant else ''}"
    series = detection_series(b, watch, {w: {"wait": w, "smtp_port": relay_port} for w in waits}, what)
    name = "lag" if not variant else "lag-delayed"
    suffix = f" (delivery delayed {b.args.relay_delay:g} s by the relay)" if variant else ""
    for wait in waits:
        mode = "--wait auto (IDLE available)" if wait == "auto" else "--wait poll"
        r.stat("lag", f"{name}.{wait}.detection_lag_ms", f"detection lag, {mode}{suffix}", "ms",
               known([d.lag_ms for d in series[wait]]), LAG_TARGET_MS)
    for wait in waits:
        matched = [d for d in series[wait] if d.lag_ms is not None]
        r.stat("lag", f"{name}.{wait}.delivery_ms", f"  delivery (accepted -> file in new/), --wait {wait}", "ms",
               known([d.delivery_ms for d in matched]))
        r.stat("lag", f"{name}.{wait}.imap_ms", f"  Response Time (IMAP) channel, --wait {wait}", "ms",
               [d.run.imap_ms for d in matched])
    how = "; ".join(f"--wait {w}: {how_seen(series[w])}" for w in waits)
    r.note("lag", f"{name}: what saw the probe{suffix}: {how}")
    unmatched = sum(d.lag_ms is None for runs in series.values() for d in runs)
    if unmatched:
        r.note("lag", f"{name}: {unmatched} run(s) without exactly one delivery event in the run's window, left out")

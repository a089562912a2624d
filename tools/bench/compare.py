"""compare (only with --probe-command): another probe command, alternating with the sensor."""

from __future__ import annotations

import shlex
from typing import List

from .figures import Figure
from .sensor import SensorRun
from .stack import Bench
from .util import BenchError, progress, ratio


def bench_compare(b: Bench, template: str) -> None:
    r = b.results
    u = b.user("probe")
    values = {
        "smtp_host": b.host, "smtp_port": b.port("smtp_plain"),
        "imap_host": b.host, "imap_port": b.port("imap_plain"),
        "user": u["login"], "password": u["password"],
        "from": b.user("sender")["address"], "to": u["address"],
        "ca_file": b.info["ca_file"], "python": b.python,
        "smtp_starttls_port": b.port("smtp_starttls"), "imap_starttls_port": b.port("imap_starttls"),
        "smtps_port": b.port("smtps"), "imaps_port": b.port("imaps"), "submission_port": b.port("submission"),
    }  # fmt: skip
    try:
        other_argv = [word.format(**values) for word in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchError(f"--probe-command: cannot fill in {exc}") from None
    mine_argv = b.sensor_argv()
    b.must(b.sensor(mine_argv), "compare warm-up")
    b.run(other_argv)  # warm-up
    mine: List[SensorRun] = []
    other: List[SensorRun] = []
    for i in range(b.runs):
        progress(f"compare: run {i + 1}/{b.runs}")
        mine.append(b.must(b.sensor(mine_argv), "compare"))
        proc = b.run(other_argv)
        other.append(SensorRun.of(proc))
    mine_wall = [run.proc.wall_ms for run in mine]
    other_wall = [run.proc.wall_ms for run in other]
    succeeded = [run for run in other if run.proc.returncode == 0 and not (run.doc and run.doc.error)]
    r.add(Figure("compare", "compare.other_succeeded", "other command: exit 0 and no error document", "runs",
                 shown=f"{len(succeeded)}/{len(other)}"))
    r.stat("compare", "compare.sensor_wall_ms", "  process wall time, this sensor", "ms", mine_wall)
    r.stat("compare", "compare.other_wall_ms", "  process wall time, other command", "ms", other_wall)
    times = ratio(other_wall, mine_wall)
    r.stat("compare", "compare.wall_ratio", "wall time other / this sensor", "x", [times] if times is not None else [])
    other_total = [run.doc.channels["Total"] for run in other if run.doc and "Total" in run.doc.channels]
    if other_total:
        times = ratio(other_total, [run.total for run in mine])
        r.stat("compare", "compare.total_ratio", "Total other / this sensor", "x", [times] if times is not None else [])
        r.stat("compare", "compare.sensor_total_ms", "  Total, this sensor", "ms", [run.total for run in mine])
        r.stat("compare", "compare.other_total_ms", "  Total, other command", "ms", other_total)
    else:
        r.note("compare", "the other command printed no PRTG document with a Total channel: wall times only")
    r.note("compare", f"other command: {shlex.join(other_argv).replace(u['password'], '***')}")
    left = b.clear_inbox("probe")
    if left:
        r.note("compare", f"{left} message(s) left in probe's INBOX after the comparison: expunged")

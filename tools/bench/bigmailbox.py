"""bigmailbox: the same round trip against an empty INBOX and one of --messages (50,000) messages."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from . import parsers
from .figures import num
from .lag import Detected, delivery_and_lag, known
from .stack import Bench, MaildirWatch
from .util import BenchError, median, progress, ratio

FILLER_MARK = "prtg-bench-filler"
BIG_RATIO_TARGET = 1.2


def _filler_files(maildir: Path) -> Iterator[Path]:
    for sub in ("cur", "new"):
        directory = maildir / sub
        with os.scandir(directory) as entries:
            for entry in entries:
                if FILLER_MARK in entry.name:
                    yield directory / entry.name


def fill_maildir(maildir: Path, count: int) -> float:
    """Write `count` messages into maildir/cur as the Maildir's owner; the seconds it took."""
    cur = maildir / "cur"
    owner = os.stat(cur)
    started = time.monotonic()
    stamp = int(time.time()) - 86400
    run_id = uuid.uuid4().hex[:12]
    for i in range(count):
        body = (
            f"From: filler <sender@roundtrip.test>\n"
            f"To: other@roundtrip.test\n"
            f"Subject: bench filler message {i}\n"
            f"Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
            f"Message-ID: <{run_id}.{i}.{FILLER_MARK}@roundtrip.test>\n"
            f"\n"
            f"Filler message {i} of {count}, written straight into the Maildir by tools/bench.\n"
        ).encode()
        vsize = len(body) + body.count(b"\n")  # the size with CRLF line ends, as IMAP counts it
        name = f"{stamp}.M{i}P{os.getpid()}.{FILLER_MARK},S={len(body)},W={vsize}:2,"
        fd = os.open(cur / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
    return time.monotonic() - started


def remove_fillers(b: Bench, user: str) -> Tuple[int, float]:
    """Delete the filler files and let Dovecot resync; (files removed, seconds)."""
    started = time.monotonic()
    removed = 0
    for path in list(_filler_files(b.maildir(user))):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        with b.imap(user) as conn:
            conn.select("INBOX")
            conn.noop()
    return removed, time.monotonic() - started


def bench_bigmailbox(b: Bench) -> None:
    r = b.results
    count = int(b.args.messages)
    stale, _ = remove_fillers(b, "other")
    if stale:
        r.note("bigmailbox", f"removed {stale} filler messages left by an earlier, interrupted bench")
    for user in ("probe", "other"):
        left = b.clear_inbox(user)
        if left:
            r.note("bigmailbox", f"{user}'s INBOX held {left} message(s) before the test: expunged")
    searches = ("server", "local")
    users = ("probe", "other")
    watches = {user: MaildirWatch(b.maildir(user)) for user in users}

    def series(phase: str) -> Dict[Tuple[str, str], List[Detected]]:
        runs: Dict[Tuple[str, str], List[Detected]] = {}
        for search in searches:
            for user in users:
                b.must(b.sensor(b.sensor_argv(user=user, search=search, verbose=True)), f"{phase} warm-up")
        for i in range(b.runs):
            for search in searches:
                for user in users:
                    progress(f"bigmailbox {phase}: run {i + 1}/{b.runs} --search {search} user {user}")
                    run = b.must(b.sensor(b.sensor_argv(user=user, search=search, verbose=True)), phase)
                    measured = delivery_and_lag(run, watches[user])
                    runs.setdefault((search, user), []).append(
                        Detected(run, *(measured if measured else (None, None)))
                    )
        return runs

    try:
        empty = series("both empty")
        try:
            progress(f"bigmailbox: writing {count} messages into other's Maildir/cur")
            seconds = fill_maildir(b.maildir("other"), count)
            r.note("bigmailbox", f"wrote {count} Maildir files in {seconds:.1f} s")
            started = time.monotonic()
            with b.imap("other") as conn:
                _, data = conn.select("INBOX")
                selected = time.monotonic()
                conn.fetch("1:*", "(FLAGS)")
            exists = int(data[0] or b"0")
            r.note("bigmailbox", f"warm-up client (untimed for the figures): SELECT saw {exists} messages in "
                   f"{selected - started:.2f} s, FETCH 1:* (FLAGS) {time.monotonic() - selected:.2f} s")
            if exists < count:
                raise BenchError(f"Dovecot sees {exists} messages, not {count}")
            full = series("other full")
        finally:
            removed, seconds = remove_fillers(b, "other")
            left = b.message_count("other")
            r.note("bigmailbox", f"cleanup: deleted {removed} files, Dovecot resynced in {seconds:.1f} s; "
                   f"other's INBOX now holds {left} message(s)")
    finally:
        for watch in watches.values():
            watch.close()

    def totals(runs: List[Detected]) -> List[float]:
        return [m.run.total for m in runs]

    for search in searches:
        factor = ratio(totals(empty[(search, "other")]), totals(empty[(search, "probe")]))
        r.stat("bigmailbox", f"bigmailbox.{search}.calibration_ratio",
               f"  calibration, both empty: Total other / probe, --search {search}", "x",
               [factor] if factor is not None else [])
    for search in searches:
        small, big = full[(search, "probe")], full[(search, "other")]
        factor = ratio(totals(big), totals(small))
        fig = r.stat("bigmailbox", f"bigmailbox.{search}.total_ratio",
                     f"Total {count:,} messages / empty, --search {search}", "x",
                     [factor] if factor is not None else [], BIG_RATIO_TARGET)
        fig.target_text = f"<= {BIG_RATIO_TARGET:g}x"
        for runs, what in ((small, "empty INBOX"), (big, f"{count:,} messages")):
            tag = "empty" if runs is small else "full"
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.total_ms", f"  Total, {what}, --search {search}", "ms",
                   totals(runs))
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.delivery_ms",
                   f"    delivery (accepted -> file in new/), {what}", "ms", known([m.delivery_ms for m in runs]))
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.lag_ms", f"    detection lag, {what}", "ms",
                   known([m.lag_ms for m in runs]))
            r.stat("bigmailbox", f"bigmailbox.{search}.{tag}.wall_ms", f"    process wall time, {what}", "ms",
                   [m.run.proc.wall_ms for m in runs])
        for runs, what in ((small, "empty"), (big, "full")):
            times: Dict[str, List[float]] = {}
            checks: List[float] = []
            for m in runs:
                for name, values in m.run.command_times().items():
                    times.setdefault(name, []).extend(values)
                seen = parsers.checks(m.run.doc.text if m.run.doc else "")
                if seen is not None:
                    checks.append(float(seen))
            summary = ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in sorted(times.items()))
            r.note("bigmailbox", f"--search {search}, {what}: median checks {num(median(checks))}; "
                   f"median ms per IMAP command: {summary}")

"""Child processes: spawned, reaped with os.wait4 (wall time, peak RSS, CPU time), bounded in time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Dict, List, Optional, Sequence

from .util import ROOT, RUN_TIMEOUT


@dataclass
class Proc:
    argv: List[str]
    started: float  # time.monotonic() just before the spawn
    ended: float  # time.monotonic() right after os.wait4 returned
    returncode: int
    maxrss_kib: int
    stdout: str
    stderr: str
    killed: bool = False
    rss_floor_kib: int = 0  # the spawner's own peak: ru_maxrss cannot read lower than this
    cpu_ms: Optional[float] = None  # ru_utime + ru_stime from os.wait4 (through the spawner only)

    @property
    def wall_ms(self) -> float:
        return (self.ended - self.started) * 1000.0


# A direct child of this process would not show its own peak RSS: exec() records the old address
# space's high-water mark in the process's ru_maxrss, and (v)fork gives the child this process's,
# which is bigger than the sensor's.  Measured runs therefore start from a minimal interpreter
# (python -S -I) that spawns the command itself and writes down what os.wait4 said.  Its own peak
# (VmHWM, about 8 MiB) is the floor no reading can go below; the bench prints it.
_SPAWNER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.monotonic()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
ended = time.monotonic()
floor = 0
with open("/proc/self/status") as handle:
    for line in handle:
        if line.startswith("VmHWM:"):
            floor = int(line.split()[1])
with open(report, "w") as handle:
    handle.write("%r %r %d %d %d %r" % (started, ended, status, usage.ru_maxrss, floor,
                                        usage.ru_utime + usage.ru_stime))
"""


class _Child:
    """One command, started now and reaped by a thread (os.wait4); optionally through the spawner."""

    def __init__(self, argv: List[str], env: Dict[str, str], spawner: Optional[str] = None):
        self.argv = argv
        self.report: Optional[str] = None
        launch = argv
        if spawner:
            fd, self.report = tempfile.mkstemp(prefix="prtg-bench-", suffix=".spawn")
            os.close(fd)
            launch = [spawner, "-S", "-I", "-c", _SPAWNER, self.report, *argv]
        self.out: IO[bytes] = tempfile.TemporaryFile()
        self.err: IO[bytes] = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(launch, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err,
                                     cwd=str(ROOT), env=env, start_new_session=bool(spawner))
        self.ended = 0.0
        self.maxrss = 0
        self.cpu: Optional[float] = None
        self.floor = 0
        self.killed = False
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.ended = time.monotonic()
        self.maxrss = int(usage.ru_maxrss)
        self.cpu = (usage.ru_utime + usage.ru_stime) * 1000.0  # a direct child's own CPU time is exact
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen

    def kill(self) -> None:
        if not self.thread.is_alive():
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            if self.report:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the spawner's own group: it and its command
            else:
                os.kill(self.proc.pid, signal.SIGKILL)

    def result(self) -> Proc:
        texts = []
        for handle in (self.out, self.err):
            handle.seek(0)
            texts.append(handle.read().decode("utf-8", "replace"))
            handle.close()
        code = self.proc.returncode if self.proc.returncode is not None else -1
        started, ended, maxrss = self.started, self.ended or time.monotonic(), self.maxrss
        cpu = self.cpu
        if self.report:
            try:
                with open(self.report) as report:
                    fields = report.read().split()
                started, ended = float(fields[0]), float(fields[1])
                code = os.waitstatus_to_exitcode(int(fields[2]))
                maxrss, self.floor = int(fields[3]), int(fields[4])
                cpu = float(fields[5]) * 1000.0
            except (OSError, ValueError, IndexError):
                code = code or -1  # the spawner failed (its traceback is in stderr)
                maxrss, cpu = 0, None
            with contextlib.suppress(OSError):
                os.unlink(self.report)
        return Proc(self.argv, started, ended, code, maxrss, texts[0], texts[1], self.killed, self.floor, cpu)


def run_processes(argvs: Sequence[List[str]], env: Dict[str, str], spawner: Optional[str] = None,
                  timeout: float = RUN_TIMEOUT) -> List[Proc]:
    """Start all commands at once (one right after the other), wait for all, at most `timeout`."""
    children = [_Child(list(argv), env, spawner) for argv in argvs]
    deadline = time.monotonic() + timeout
    for child in children:
        child.thread.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.thread.is_alive():
            child.kill()
            child.thread.join(10.0)
    return [child.result() for child in children]


# The sensor runs as an installed package would, with its bytecode: compiled here once (into
# __pycache__, for the sensor's interpreter), and PYTHONDONTWRITEBYTECODE left out of the sensor's
# environment (stack.Bench.env), since this machine sets it.
BYTECODE_CHECK = r"""
import importlib.util, sys
missing = []
for name in ("prtg_roundtrip", "imapclient", "jinja2", "defusedxml"):
    module = __import__(name)
    path = getattr(module, "__file__", None)
    cached = importlib.util.cache_from_source(path) if path else None
    if not cached or not __import__("os").path.exists(cached):
        missing.append(name)
print(" ".join(missing))
"""


def prepare_bytecode(python: str, env: Dict[str, str]) -> str:
    """Compile prtg_roundtrip with compileall for `python`; a note saying what was done."""
    done = subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "prtg_roundtrip")], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return f"compileall of prtg_roundtrip failed (exit {done.returncode}): {done.stdout.strip()[-200:]}"
    check = subprocess.run([python, "-c", BYTECODE_CHECK], cwd=str(ROOT), env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    missing = check.stdout.strip() if check.returncode == 0 else "?"
    was = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return (f"bytecode: compiled prtg_roundtrip with compileall for {python}; sensor processes run without "
            f"PYTHONDONTWRITEBYTECODE (here it was {'set to ' + repr(was) if was is not None else 'not set'}); "
            f"top-level packages without cached bytecode: {missing or 'none'}")

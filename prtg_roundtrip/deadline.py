"""One clock and one budget for the whole run.

All timings use the monotonic high-resolution clock (`now`), in seconds; channels convert to
milliseconds. Every connect, read and wait asks the Deadline how long it may take, so the
document is printed before PRTG's timeout kills the process.

A socket timeout bounds one read, not a conversation: a server that trickles a byte now and
then would never trip it. So every socket is also `guard`ed: when the budget runs out, a timer
shuts the guarded sockets down, the blocked read returns at once, and `fired` tells the step
that the budget, not the server, ended it.

The budget counts from the process start (`process_start`), not from the end of the imports:
PRTG's timeout does. `note_step` / `current_step` track the step that is running, for the texts
that must say where a run stopped (the last-resort watchdog, a SIGTERM).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import List, Optional, Tuple

now = time.perf_counter
_IMPORTED = now()  # the earliest timestamp this package takes (cli imports this module first)

# Kept back from the budget for closing connections, rendering and writing the document.
RESERVE_SECONDS = 1.5
# The watchdog fires this long after the budget's end, so that a silent server is caught by
# the socket timeout first ("no answer within N s") and only a server that keeps sending
# without finishing is cut off by the watchdog ("the budget ran out").
WATCHDOG_GRACE = 0.3


_step = "starting"
_run_start: Optional[float] = None


def note_step(text: str) -> None:
    """Record the step the run is in now (a plain assignment: atomic, cheap, any thread)."""
    global _step
    _step = text


def current_step() -> str:
    """The step last recorded by note_step."""
    return _step


def process_start() -> float:
    """When this process started, on the `now` clock: from /proc on Linux, GetProcessTimes on
    Windows, else the moment this module was imported."""
    elapsed = None
    try:
        if os.name == "nt":
            elapsed = _windows_process_age()
        elif os.path.exists("/proc/self/stat"):
            elapsed = _proc_process_age()
    except (OSError, ValueError, AttributeError, IndexError):
        elapsed = None
    if elapsed is None or not 0.0 <= elapsed < 3600.0:
        return _IMPORTED
    return min(_IMPORTED, now() - elapsed)


def _proc_process_age() -> float:
    with open("/proc/self/stat", "rb") as handle:
        stat = handle.read().decode("ascii", "replace")
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    started_ticks = int(fields[19])  # field 22 of proc(5): starttime, clock ticks after boot
    with open("/proc/uptime", "rb") as handle:
        uptime = float(handle.read().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def _windows_process_age() -> Optional[float]:  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    creation, exited, kernel, user, current = (wintypes.FILETIME() for _ in range(5))
    handle = kernel32.GetCurrentProcess()
    if not kernel32.GetProcessTimes(handle, ctypes.byref(creation), ctypes.byref(exited),
                                    ctypes.byref(kernel), ctypes.byref(user)):
        return None
    kernel32.GetSystemTimeAsFileTime(ctypes.byref(current))

    def ticks(ft: wintypes.FILETIME) -> int:
        return (ft.dwHighDateTime << 32) | ft.dwLowDateTime

    return (ticks(current) - ticks(creation)) / 1e7  # 100 ns units


def set_run_start(start: Optional[float]) -> None:
    """Where budgets count from: the process start for a real run (cli.main sets it), or the
    moment an in-process caller started main(); None forgets it."""
    global _run_start
    _run_start = start


def run_start() -> float:
    return now() if _run_start is None else _run_start


class Deadline:
    def __init__(self, budget: float, start: float | None = None):
        self.start = now() if start is None else start  # the run's: Deadline(budget, run_start())
        self.budget = budget
        self.end = self.start + max(0.0, budget - RESERVE_SECONDS)
        self.fired = False
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        return max(0.0, self.end - now())

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left of the budget if that is less (never below 10 ms)."""
        return max(0.01, min(seconds, self.remaining()))

    def guard(self, sock: socket.socket) -> None:
        """Shut `sock` down when the budget runs out (the socket itself stays the caller's)."""
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self._timer is None:
                self._timer = threading.Timer(self.remaining() + WATCHDOG_GRACE, self._fire)
                self._timer.daemon = True
                self._timer.start()
        if self.fired:
            self._fire()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                # The plain socket's shutdown, also for an SSLSocket: it only ends the TCP
                # stream, leaving the TLS object to the thread that is blocked reading it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass  # already closed, or replaced by a STARTTLS wrapper

    def ran_out(self, phase: str) -> Tuple[str, str]:
        """(cause, what to try) when the budget, not a server, ended a step."""
        return (
            f"the run's --timeout budget ({self.budget:g} s) ran out during {phase}",
            "The server kept the connection open without finishing its answer; check the server, "
            "or raise PRTG's timeout together with --timeout",
        )

    def release(self) -> None:
        """The run is over: no more shutdowns."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._sockets.clear()

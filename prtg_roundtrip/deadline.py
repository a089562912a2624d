"""One clock and one budget for the whole run.

All timings use the monotonic high-resolution clock (`now`), in seconds; channels convert to
milliseconds. Every connect, read and wait asks the Deadline how long it may take, so the
document is printed before PRTG's timeout kills the process.
"""

from __future__ import annotations

import time

now = time.perf_counter

# Kept back from the budget for closing connections, rendering and writing the document.
RESERVE_SECONDS = 1.5


class Deadline:
    def __init__(self, budget: float, start: float | None = None):
        self.start = now() if start is None else start
        self.budget = budget
        self.end = self.start + max(0.0, budget - RESERVE_SECONDS)

    def remaining(self) -> float:
        return max(0.0, self.end - now())

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left of the budget if that is less (never below 10 ms)."""
        return max(0.01, min(seconds, self.remaining()))

    def expired(self) -> bool:
        return now() >= self.end

"""When the mailbox is checked while waiting, and what that costs at most: one piece of code.

Check at once, then after gaps that grow by GROWTH from FIRST_GAP up to --interval, so a
delivery of a few milliseconds is seen within a few milliseconds and a late one at most about 20%
late. From IDLE_TAKEOVER on, a gap is spent in IDLE where the server offers it (a push ends it
early). `checks()` yields the schedule; `command_bound()` counts the worst case from the very same
schedule: every check NOOP + SEARCH + FETCH, IDLE + DONE around every late gap.

For the defaults (--max-trip-time 30, --interval 5): 45 checks, 15 of them in the first 100 ms,
and at most 174 commands; for --max-trip-time 10 --interval 1, 154. A run whose probe arrives in a
few milliseconds sends about 15 commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

FIRST_GAP = 0.002  # seconds after the first check
GROWTH = 1.2  # each gap this much longer than the one before: the probe is seen at most ~20% late
IDLE_TAKEOVER = 0.5  # from this gap on, wait in IDLE (a push ends the wait early)

OPENING_COMMANDS = 5  # CAPABILITY, STARTTLS, CAPABILITY, LOGIN, SELECT
CLOSING_COMMANDS = 3 + 4 + 1  # delete (STORE, SEARCH DELETED, EXPUNGE), sweep (4), LOGOUT
# The Junk watch (imap_junk): LIST (SPECIAL-USE), LIST, STATUS when armed; per search check after
# the first, a STATUS, and when the Junk folder got mail, SELECT it, NOOP + SEARCH + FETCH, SELECT
# the mailbox again; after a probe found there, SELECT the mailbox for the sweep.
JUNK_ARMING_COMMANDS = 3
JUNK_LOOK_COMMANDS = 6
JUNK_CLOSING_COMMANDS = 1


@dataclass(frozen=True)
class Gap:
    """The wait after one check: how long, and whether it may be spent in IDLE."""

    seconds: float
    idle: bool


@dataclass(frozen=True)
class WaitSchedule:
    """When the IMAP leg checks the mailbox, and how many commands that can take."""

    max_trip_time: float
    interval: float

    def gaps(self) -> Iterator[Gap]:
        """The wait after each check, endlessly (the caller stops at its end time)."""
        gap = FIRST_GAP
        while True:
            yield Gap(gap, gap >= IDLE_TAKEOVER)
            gap = min(gap * GROWTH, self.interval)

    def planned(self) -> Iterator[Gap]:
        """The gaps of a wait that lasts the whole --max-trip-time (the worst case)."""
        elapsed = 0.0
        for gap in self.gaps():
            if elapsed >= self.max_trip_time:
                return
            yield gap
            elapsed += gap.seconds

    def command_bound(self) -> int:
        """The most IMAP commands one run sends."""
        gaps = list(self.planned())
        checks = len(gaps) + 1  # a check before each gap, and one at the end
        idles = sum(gap.idle for gap in gaps)
        searches = int(self.max_trip_time / self.interval) + 2  # once per --interval, and at the end
        junk = JUNK_ARMING_COMMANDS + JUNK_LOOK_COMMANDS * searches + JUNK_CLOSING_COMMANDS
        return OPENING_COMMANDS + 3 * checks + 2 * idles + CLOSING_COMMANDS + junk


def command_bound(max_trip_time: float, interval: float) -> int:
    return WaitSchedule(max_trip_time, interval).command_bound()

"""Injected time.

Logic never reads the wall clock directly: it is handed a :class:`Clock`, so tests can
drive schedules, DST and clock skew without sleeping or patching ``time.time``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime


class Clock:
    """The real clock: wall time for schedules, monotonic time for deadlines."""

    def time(self) -> float:
        """Seconds since the epoch (wall clock, UTC)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""
        return time.monotonic()

    def now(self) -> datetime:
        """The wall clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)


@dataclass
class OffsetClock(Clock):
    """A wall clock that runs ``offset`` seconds ahead (or behind, if negative).

    Used to simulate clock skew between workers; monotonic time is unaffected.
    """

    offset: float = 0.0

    def time(self) -> float:
        return time.time() + self.offset

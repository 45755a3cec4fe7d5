"""Injected time.

Logic never reads the wall clock directly: it is handed a :class:`Clock`, so tests can
drive schedules, DST and clock skew without sleeping or patching ``time.time``.

Two kinds of waits:

- **Waits for a wall-clock instant** (a tick, a turn to claim, the moment to
  start a child) go through the clock: :meth:`Clock.sleep_until`,
  :meth:`Clock.call_at`, :meth:`Clock.wait` and :meth:`Clock.spin_until`. The
  real clock turns the instant into a delay on the event loop; a test clock
  (``tests/support/fakeclock.py``) fires them when the test moves time on.
- **Durations** (leases, retries, etcd timeouts, grace periods) are not about
  the wall clock: they stay on the event loop (``asyncio.sleep``,
  ``asyncio.timeout``) and pass in real time whatever the clock says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


class Cancellable(Protocol):
    """What :meth:`Clock.call_at` returns (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock:
    """The real clock: wall time for schedules, monotonic time for deadlines."""

    def time(self) -> float:
        """Seconds since the epoch (wall clock, UTC)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences mean anything."""
        return time.monotonic()

    def steady(self) -> float:
        """Seconds on a clock that runs with the wall clock but never steps (the
        wall clock minus its steps): what relates two wall-clock readings taken
        at different moments (``workers.cluster_time``). On a real host it is
        :meth:`monotonic`; a test clock moves it with the wall clock when it
        makes time pass, while its :meth:`monotonic` stays real (leases,
        commit times and timeouts are real durations)."""
        return self.monotonic()

    def now(self) -> datetime:
        """The wall clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)

    # waits for wall-clock instants -------------------------------------------

    async def sleep_until(self, t: float) -> None:
        """Return at wall instant ``t`` (at once, without yielding, if it has passed)."""
        delay = t - self.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Cancellable:
        """Call ``callback(*args)`` from the event loop at wall instant ``t`` (soon, if past)."""
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, t - self.time()), callback, *args)

    async def wait(self, event: asyncio.Event, until: float | None, *, cap: float) -> None:
        """Wait for ``event``, until wall instant ``until`` at the latest (None: no
        instant), and ``cap`` seconds of real time at most (a duration: a
        re-check that does not depend on the clock). Returns at once, without
        yielding, if ``until`` has passed."""
        delay = cap if until is None else min(cap, until - self.time())
        if delay > 0:
            try:
                async with asyncio.timeout(delay):
                    await event.wait()
            except TimeoutError:
                pass

    def spin_until(self, t: float, limit: float) -> None:
        """Busy-wait (blocking the loop) until wall instant ``t``, ``limit`` seconds
        of real time at most: for the last millisecond before an exact instant,
        finer than the event loop's timers."""
        give_up = time.monotonic() + limit  # an injected clock may not move
        while self.time() < t and time.monotonic() < give_up:
            pass


@dataclass
class OffsetClock(Clock):
    """A wall clock that runs ``offset`` seconds ahead (or behind, if negative) of ``base``.

    Used to simulate clock skew between workers; monotonic time is ``base``'s.
    Waits for an instant of this clock wait for the same instant of ``base``.
    """

    offset: float = 0.0
    base: Clock = field(default_factory=Clock)

    def time(self) -> float:
        return self.base.time() + self.offset

    def monotonic(self) -> float:
        return self.base.monotonic()

    def steady(self) -> float:
        return self.base.steady()

    async def sleep_until(self, t: float) -> None:
        await self.base.sleep_until(t - self.offset)

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Cancellable:
        return self.base.call_at(t - self.offset, callback, *args)

    async def wait(self, event: asyncio.Event, until: float | None, *, cap: float) -> None:
        await self.base.wait(event, None if until is None else until - self.offset, cap=cap)

    def spin_until(self, t: float, limit: float) -> None:
        self.base.spin_until(t - self.offset, limit)

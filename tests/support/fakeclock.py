"""A clock that tests move by hand: days of schedule in milliseconds of real time.

:class:`ManualClock` is a :class:`scheduler.clock.Clock` whose wall time stands
still until the test moves it with :meth:`ManualClock.advance` or
:meth:`ManualClock.advance_to`. Pass it to ``Worker(config, clock=...)`` (or
wrap it in ``OffsetClock(offset, base=clock)`` for a worker whose host clock
is skewed against the others).

Rules:

- ``time()`` is the virtual wall clock; ``steady()`` moves with it when time
  passes (and not when the test ``step``\\s the wall clock, as NTP would);
  ``monotonic()`` stays real, so leases, commit times, retries and etcd
  timeouts are real durations, as are ``asyncio.sleep`` and ``asyncio.timeout``.
- Waits for a wall instant (``sleep_until``, ``call_at``, ``wait``) are kept
  in a heap, keyed on steady time like the event loop's timers are on
  monotonic time. Advancing moves time to each due instant in turn, fires
  everything due there, and lets the loop run until it has *settled* before
  moving on: no sleeper that was woken is still to resume, and the
  ``settled`` predicate (e.g. :func:`workers_quiet`) holds. A worker's claim
  to the real etcd, its child and its release thus finish before time moves
  past the next instant.
- ``spin_until`` (the launcher's last-millisecond busy-wait) moves time to the
  instant at once instead of spinning.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scheduler.clock import Cancellable, Clock

if TYPE_CHECKING:
    from workers.worker import Worker

YIELDS = 5
"""Loop iterations given to woken tasks before the settled check."""


class _Entry:
    """One wait for an instant: a callback, or the wake-up of a sleeper."""

    __slots__ = ("args", "at", "callback", "cancelled", "clock", "fired", "owner")

    def __init__(
        self,
        clock: ManualClock,
        at: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        owner: asyncio.Task[Any] | None,
    ) -> None:
        self.clock = clock
        self.at = at
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.fired = False
        self.owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.clock._unpark(self.owner)


class ManualClock(Clock):
    """See the module docstring."""

    def __init__(
        self, start: datetime | float, *, settled: Callable[[], bool] | None = None
    ) -> None:
        self._wall = start.timestamp() if isinstance(start, datetime) else float(start)
        self._stepped = 0.0
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._woken = 0
        self._events: list[asyncio.Event] = []
        self._parked: dict[asyncio.Task[Any], int] = {}
        self.settled = settled
        """Extra condition for "the loop has settled" (see :func:`workers_quiet`)."""
        self.fired = 0
        """Waits fired so far (a test can check that time was driven, not waited)."""

    # Clock ------------------------------------------------------------------

    def time(self) -> float:
        return self._wall

    def steady(self) -> float:
        return self._wall - self._stepped

    async def sleep_until(self, t: float) -> None:
        if t <= self._wall:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = self._add(t, _wake, (fut,))
        try:
            await fut
        finally:
            self._resumed(entry)

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Cancellable:
        if t <= self._wall:
            return asyncio.get_running_loop().call_soon(callback, *args)
        return self._add(t, callback, args)

    async def wait(self, event: asyncio.Event, until: float | None, *, cap: float) -> None:
        if until is not None and until <= self._wall:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = self._add(until, _wake, (fut,)) if until is not None else None
        woken = loop.create_task(event.wait())
        self._events.append(event)
        try:
            either: set[asyncio.Future[Any]] = {fut, woken}
            await asyncio.wait(either, timeout=cap, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            self._events.remove(event)
            if entry is not None:
                self._resumed(entry)

    def spin_until(self, t: float, limit: float) -> None:
        self._wall = max(self._wall, t)  # the busy-wait's millisecond passes at once

    # moving time --------------------------------------------------------------

    async def advance(self, seconds: float, *, timeout: float = 10.0) -> None:
        """Let ``seconds`` of wall time pass (see :meth:`advance_to`)."""
        await self.advance_to(self._wall + seconds, timeout=timeout)

    async def advance_to(self, t: float | datetime, *, timeout: float = 10.0) -> None:
        """Move time to ``t``, stopping at every instant something waits for: fire
        what is due there, then wait (``timeout`` real seconds at most per
        instant) until the loop has settled."""
        target = t.timestamp() if isinstance(t, datetime) else float(t)
        if target < self._wall:
            raise ValueError(f"time does not go back: {target} < {self._wall}")
        await self.settle(timeout)
        while True:
            self._drop_cancelled()
            if not self._heap or self._heap[0][0] > target - self._stepped:
                break
            self._wall = max(self._wall, self._heap[0][0] + self._stepped)
            while self._heap and self._heap[0][0] <= self.steady():
                _, _, entry = heapq.heappop(self._heap)
                if not entry.cancelled:
                    self._fire(entry)
            await self.settle(timeout)
        self._wall = max(self._wall, target)
        await self.settle(timeout)

    def step(self, seconds: float) -> None:
        """Step the wall clock (as NTP or ``date -s`` would): pending waits keep
        their steady instants, like the event loop's timers."""
        self._wall += seconds
        self._stepped += seconds

    async def settle(self, timeout: float = 10.0) -> None:
        """Return once no woken sleeper is still to resume and ``settled`` holds
        (twice, a few loop iterations apart); AssertionError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        confirmed = 0
        while True:
            for _ in range(YIELDS):
                await asyncio.sleep(0)
            confirmed = confirmed + 1 if self._quiet() else 0
            if confirmed >= 2:
                return
            if loop.time() > deadline:
                at = datetime.fromtimestamp(self._wall, UTC).isoformat()
                raise AssertionError(
                    f"the loop did not settle within {timeout}s at {at}"
                    f" (woken sleepers: {self._woken})"
                )
            if not confirmed:
                await asyncio.sleep(0.001)

    def pending(self) -> list[float]:
        """The wall instants waited for, earliest first."""
        self._drop_cancelled()
        return sorted(at + self._stepped for at, _, e in self._heap if not e.cancelled)

    def parks(self, task: asyncio.Task[Any]) -> bool:
        """Is ``task`` waiting for this clock (a sleeper, or a callback it set)?"""
        return self._parked.get(task, 0) > 0

    # inside -------------------------------------------------------------------

    def _quiet(self) -> bool:
        if self._woken or any(e.is_set() for e in self._events):
            return False
        return self.settled is None or self.settled()

    def _add(self, t: float, callback: Callable[..., object], args: tuple[Any, ...]) -> _Entry:
        owner = asyncio.current_task()
        entry = _Entry(self, t - self._stepped, callback, args, owner)
        if owner is not None:
            self._parked[owner] = self._parked.get(owner, 0) + 1
        heapq.heappush(self._heap, (entry.at, next(self._seq), entry))
        return entry

    def _unpark(self, task: asyncio.Task[Any] | None) -> None:
        if task is None:
            return
        n = self._parked.get(task, 0) - 1
        if n > 0:
            self._parked[task] = n
        else:
            self._parked.pop(task, None)

    def _fire(self, entry: _Entry) -> None:
        entry.cancelled = entry.fired = True  # done: a later cancel() is a no-op
        self.fired += 1
        if entry.callback is _wake:
            self._woken += 1  # until the sleeper resumes (``_resumed``)
            entry.callback(*entry.args)
            return
        self._unpark(entry.owner)
        try:
            entry.callback(*entry.args)
        except Exception as exc:  # as the event loop does: report, go on
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"clock callback {entry.callback!r} failed", "exception": exc}
            )

    def _resumed(self, entry: _Entry) -> None:
        if entry.fired:
            self._woken -= 1  # fired, and its sleeper runs again
            self._unpark(entry.owner)
        else:
            entry.cancel()

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def workers_quiet(clock: ManualClock, ws: Iterable[Worker]) -> Callable[[], bool]:
    """A ``settled`` predicate: no claim in flight, no record being written, and
    every tick or run task of the workers either done or waiting for ``clock``."""
    ws = list(ws)

    def quiet() -> bool:
        for w in ws:
            if w.runs.in_flight or w.tasks.background_tasks:
                return False
            if any(not t.done() and not clock.parks(t) for t in w.tasks.run_tasks):
                return False
        return True

    return quiet

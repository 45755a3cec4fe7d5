"""Start the children due at one instant back to back.

Runs are claimed a little ahead of their tick (``worker.claim_ahead``) and
prepared (environment, output sink, guard) before it. At the tick the only work
left is the exec itself, so every child due at that instant is started from one
event-loop callback, one after the other, before any task resumes: the last
child of a burst waits for the other execs and nothing else.

Rules:

- ``at(when_ms, start)`` returns once ``start()`` has been called, at
  ``when_ms`` on the worker's clock (at once if that has passed), not later:
  the timer is set ``EARLY`` and the last moment is waited out in the callback
  (event-loop timers can be a millisecond late). Both go through the clock
  (``Clock.call_at``, ``Clock.spin_until``), so a test clock fires the batch
  when it moves time on, without a busy-wait.
- Each ``start`` is called at most once; an exception from one is logged and
  does not stop the others.
- A caller cancelled before its instant is dropped and its ``start`` is never
  called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from scheduler.clock import Clock

log = structlog.get_logger("etcron.launch")

Start = Callable[[], None]

EARLY = 0.002
"""Seconds before the instant at which the batch's timer is set (see ``_fire``)."""


class Launcher:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._due: dict[int, list[tuple[Start, asyncio.Future[None]]]] = {}

    async def at(self, when_ms: int, start: Start) -> None:
        delay = when_ms / 1000 - self.clock.time()
        if delay <= 0:
            start()
            return
        loop = asyncio.get_running_loop()
        batch = self._due.get(when_ms)
        if batch is None:
            batch = self._due[when_ms] = []
            self.clock.call_at(when_ms / 1000 - EARLY, self._fire, when_ms)
        done: asyncio.Future[None] = loop.create_future()
        batch.append((start, done))
        await done

    def _fire(self, when_ms: int) -> None:
        # the event loop's timers wake up to a millisecond late (epoll's
        # resolution): wake a little early and wait out the rest here
        self.clock.spin_until(when_ms / 1000, 2 * EARLY)
        for start, done in self._due.pop(when_ms, []):
            if done.done():  # the caller was cancelled
                continue
            try:
                start()
            except Exception as exc:  # one bad start must not hold up the rest
                log.exception("starting a run failed", error=repr(exc))
            done.set_result(None)

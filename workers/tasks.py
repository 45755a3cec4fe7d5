"""The worker's short-lived tasks: runs, and bookkeeping nobody waits for.

The worker's long-running loops live in its ``TaskGroup`` (``workers.worker``);
everything else it starts goes through :class:`Tasks`:

- ``spawn`` — a tick's claim and its run. A drain waits for these.
- ``background`` — records and repairs no run waits for. Cancelled at shutdown.

A task that fails is logged with its error, never dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog


class Tasks:
    def __init__(self, log: structlog.typing.FilteringBoundLogger) -> None:
        self.log = log
        self.run_tasks: set[asyncio.Task[None]] = set()
        """Claims and runs (``spawn``)."""
        self.background_tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.run_tasks.add(task)
        task.add_done_callback(self._run_done)

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Bookkeeping that no run waits for (records, repairs): kept, logged if it fails."""
        task = asyncio.create_task(coro)
        self.background_tasks.add(task)
        task.add_done_callback(self._background_done)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self.run_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("run task failed", error=repr(task.exception()))

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", error=repr(task.exception()))

    async def wait_runs(self) -> None:
        """Until every claim and run task has ended."""
        while self.run_tasks:
            await asyncio.wait(list(self.run_tasks))

    async def wait_one_run(self) -> None:
        """Until at least one claim or run task ends (at once if there is none)."""
        if self.run_tasks:
            await asyncio.wait(list(self.run_tasks), return_when=asyncio.FIRST_COMPLETED)

    async def cancel_all(self, grace: float) -> None:
        """Cancel everything; give cancelled runs ``grace`` seconds to write their
        final record and release their lock (``workers.runner``)."""
        for t in self.run_tasks | self.background_tasks:
            t.cancel()
        if self.run_tasks:
            await asyncio.wait(list(self.run_tasks), timeout=grace)

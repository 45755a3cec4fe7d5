"""Run one job attempt as a child process group.

- ``command`` runs as argv without a shell; ``shell`` runs under ``/bin/sh -c``.
- The child gets its own session (so its own process group): a timeout, a kill
  request or a lost lease signals the whole group, grandchildren included.
- stdout and stderr are read concurrently into an :class:`OutputSink`; the child
  never blocks on a full pipe, whatever it prints.
- Stopping is two-stage: SIGTERM to the group, ``kill_grace`` seconds, then SIGKILL.
- A job that forks a daemon and exits is finished when its main process exits;
  the pipes are read for a short grace more, then abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger("etcron.executor")

PIPE_GRACE = 1.0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The exit status as soon as the process exits.

    Python 3.11's ``Process.wait()`` returns only once the child's pipes are
    closed too, so a job that forks a daemon (which keeps stdout open) would
    look alive forever. A pidfd tells us when the process itself is gone.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return await proc.wait()
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, _resolve, gone)
    try:
        await gone
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    for _ in range(400):  # the child watcher reaps it in the same loop turn or the next
        if proc.returncode is not None:
            return proc.returncode
        await asyncio.sleep(0.005)
    return await proc.wait()


class StopReason(enum.Enum):
    TIMEOUT = "timeout"
    KILLED = "killed"
    LOST = "lost"
    DRAIN = "drain"


class OutputSink:
    """Receives output as it is read. The default keeps only a bounded tail."""

    def __init__(self, tail: int = 4096) -> None:
        self.tail_limit = tail
        self._tail = bytearray()
        self.total = 0

    def write(self, stream: str, data: bytes) -> None:
        self.total += len(data)
        self._tail += data
        if len(self._tail) > self.tail_limit:
            del self._tail[: len(self._tail) - self.tail_limit]

    async def flush(self) -> None:
        return None

    @property
    def tail(self) -> str:
        return self._tail.decode("utf-8", "replace")


@dataclass
class Outcome:
    exit_code: int | None
    signal: int | None
    stopped: StopReason | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.stopped is None and not self.error


class Child:
    """A running attempt. ``stop()`` may be called from anywhere, any number of times."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        user: str | None,
        sink: OutputSink,
        kill_grace: float,
        on_start: Callable[[int], None] = lambda pgid: None,
        on_exit: Callable[[int], None] = lambda pgid: None,
    ) -> None:
        self.argv = argv
        self.env = dict(env)
        self.cwd = cwd
        self.user = user
        self.sink = sink
        self.kill_grace = kill_grace
        self.on_start = on_start
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped: StopReason | None = None
        self._stop_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def run(self, timeout: float | None) -> Outcome:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                user=self.user,
            )
        except (OSError, ValueError, KeyError) as exc:
            msg = f"cannot start {self.argv[0]!r}: {exc}"
            self.sink.write("stderr", (msg + "\n").encode())
            return Outcome(127 if isinstance(exc, FileNotFoundError) else 126, None, None, msg)
        pgid = self.proc.pid
        self.on_start(pgid)
        readers = [
            asyncio.create_task(self._pump("stdout", self.proc.stdout)),
            asyncio.create_task(self._pump("stderr", self.proc.stderr)),
        ]
        try:
            try:
                async with asyncio.timeout(timeout):
                    rc = await _exited(self.proc)
            except TimeoutError:
                self.stop(StopReason.TIMEOUT)
                rc = await _exited(self.proc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PIPE_GRACE):
                    await asyncio.gather(*readers)
        finally:
            for r in readers:
                r.cancel()
            # a daemon the job left behind may hold the pipes open: let go of them
            transport = getattr(self.proc, "_transport", None)
            if transport is not None:
                transport.close()
            if self.stopped:
                self._killpg(signal.SIGKILL)
            self.on_exit(pgid)
            if self._stop_task is not None:
                self._stop_task.cancel()
        if rc < 0:
            return Outcome(None, -rc, self.stopped)
        return Outcome(rc, None, self.stopped)

    async def _pump(self, name: str, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            data = await stream.read(65536)
            if not data:
                return
            self.sink.write(name, data)

    def _killpg(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, reason: StopReason, *, now: bool = False) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after the grace (``now``: SIGKILL)."""
        if self.stopped is None:
            self.stopped = reason
        if now or self.kill_grace <= 0:
            self._killpg(signal.SIGKILL)
            return
        if self._stop_task is None:
            self._killpg(signal.SIGTERM)
            self._stop_task = asyncio.create_task(self._escalate())

    async def _escalate(self) -> None:
        await asyncio.sleep(self.kill_grace)
        self._killpg(signal.SIGKILL)

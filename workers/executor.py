"""Run one job attempt as a child process group.

- ``command`` runs as argv without a shell; ``shell`` runs under ``/bin/sh -c``.
- The child gets its own session (so its own process group): a timeout, a kill
  request or a lost lease signals the whole group, grandchildren included.
- stdout and stderr are read as they become readable (straight from the event
  loop, no stream objects) into an :class:`OutputSink`; the child never blocks
  on a full pipe, whatever it prints.
- Starting is synchronous (:meth:`Child.start`, see :mod:`workers.spawn`) so a
  batch due at one instant starts back to back; the exit is watched through a
  pidfd and the child reaped by us, not by an asyncio child watcher.
- Stopping is two-stage: SIGTERM to the group, ``kill_grace`` seconds, then SIGKILL.
- A job that forks a daemon and exits is finished when its main process exits;
  the pipes are read for a short grace more, then abandoned.
- Nothing here may leave a run hanging: a spawn that raises anything is a failed
  start (:class:`Outcome` with the error); a sink whose ``write`` raises is
  remembered in :attr:`Child.sink_error` while the pipes go on being drained;
  a :meth:`Child.run` that is cancelled SIGKILLs the group before it unwinds.
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

from workers.cgroups import RunCgroup
from workers.spawn import Spawned, spawn

log = structlog.get_logger("etcron.executor")

PIPE_GRACE = 1.0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


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
        cgroup: RunCgroup | None = None,
    ) -> None:
        self.argv = argv
        self.cgroup = cgroup
        """The attempt's cgroup (a job with ``resources``): the process enters it before exec."""
        self.env = env
        self.cwd = cwd
        self.user = user
        self.sink = sink
        self.kill_grace = kill_grace
        self.on_start = on_start
        self.on_exit = on_exit
        self.proc: Spawned | None = None
        self.returncode: int | None = None
        self.stopped: StopReason | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._pipes: dict[int, str] = {}
        self._pipes_closed: asyncio.Future[None] | None = None
        self._failed: Outcome | None = None
        self.sink_error = ""
        """The first exception the sink raised (its output may be incomplete), or ""."""

    @property
    def started(self) -> bool:
        """True once :meth:`start` was tried (the process runs, or it could not start)."""
        return self.proc is not None or self._failed is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> bool:
        """Start the process now (synchronously); False if it could not be started.

        Separate from :meth:`run` so that a batch of children due at the same
        instant can be started back to back, before any of them is awaited.
        """
        if self.proc is not None or self._failed is not None:
            return self.proc is not None
        try:
            argv = self.cgroup.wrap(self.argv) if self.cgroup is not None else self.argv
            self.proc = spawn(argv, self.env, cwd=self.cwd, user=self.user)
        except Exception as exc:  # any failure to start is the run's failure, never a hang
            msg = f"cannot start {self.argv[0]!r}: {exc}"
            self._write("stderr", (msg + "\n").encode())
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            self._failed = Outcome(code, None, None, msg)
            return False
        self.on_start(self.proc.pid)
        return True

    async def run(self, timeout: float | None) -> Outcome:
        if not self.start():
            assert self._failed is not None
            return self._failed
        proc = self.proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        self._pipes_closed = loop.create_future()
        self._pipes = {proc.stdout: "stdout", proc.stderr: "stderr"}
        for fd in self._pipes:
            loop.add_reader(fd, self._read, fd)
        try:
            try:
                async with asyncio.timeout(timeout):
                    rc = await self._exited()
            except TimeoutError:
                self.stop(StopReason.TIMEOUT)
                rc = await self._exited()
            # a daemon the job left behind may hold the pipes open: read a while, then let go
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PIPE_GRACE):
                    await asyncio.shield(self._pipes_closed)
        except BaseException:
            # cancelled (the worker is going away) or a bug: never leave the group running
            self.stop(self.stopped or StopReason.KILLED, now=True)
            raise
        finally:
            for fd in list(self._pipes):
                self._close_pipe(fd)
            if self.stopped:
                self._killpg(signal.SIGKILL)
            self.on_exit(proc.pid)
            if self._stop_task is not None:
                self._stop_task.cancel()
        if rc < 0:
            return Outcome(None, -rc, self.stopped)
        return Outcome(rc, None, self.stopped)

    async def _exited(self) -> int:
        """Wait for the child to exit and reap it; the exit status.

        The end of the pipes says nothing (a daemon may keep them open), so the
        process itself is watched through a pidfd; a kernel without pidfds gets
        a thread per child blocked in ``waitpid``.
        """
        if self.returncode is not None:
            return self.returncode
        proc = self.proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.returncode = await asyncio.to_thread(proc.reap)
            return self.returncode
        loop.add_reader(pidfd, _resolve, gone)
        try:
            await gone
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        self.returncode = proc.reap()
        return self.returncode

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._write(self._pipes[fd], data)
        else:
            self._close_pipe(fd)

    def _write(self, stream: str, data: bytes) -> None:
        """Hand output to the sink; a sink that raises costs its output, never the run."""
        try:
            self.sink.write(stream, data)
        except Exception as exc:
            if not self.sink_error:
                self.sink_error = f"output capture failed: {type(exc).__name__}: {exc}"
                log.warning("output capture failed", argv0=self.argv[0], error=repr(exc))

    def _close_pipe(self, fd: int) -> None:
        if self._pipes.pop(fd, None) is None:
            return
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if not self._pipes and self._pipes_closed is not None:
            _resolve(self._pipes_closed)

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

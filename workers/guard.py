"""The worker's side of the guard pipe: class :class:`Guard` starts the guard sidecar
(:mod:`workers.guard_sidecar`, run as ``python -m workers.guard_sidecar``), restarts it
if it exits, and tells it the lease, the deadline and the running process groups."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import structlog

from scheduler.config import EtcdConfig

log = structlog.get_logger("etcron.guard")


class Guard:
    def __init__(self, etcd: EtcdConfig) -> None:
        self.etcd = etcd
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._pgids: set[int] = set()
        self._lease = 0
        self._deadline = 0.0
        self._out: list[str] = []
        self._closing = False

    async def start(self) -> None:
        """Start the guard process and hand it everything it must know (so a restart is whole)."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.guard_sidecar",  # the sidecar's module (workers/guard_sidecar.py)
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._send(self.etcd.model_dump_json())
        self._send(f"L {self._lease}")
        if self._deadline:
            self._send(f"D {self._deadline}")
        for pgid in self._pgids:
            self._send(f"A {pgid}")
        # written before start() returns: once the restart is logged, the guard's pipe
        # holds everything it needs, even if the worker is killed right after
        self._flush()

    async def supervise(self, backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        """Restart the guard whenever it exits while the worker runs.

        Until it is back the worker's own lease deadline still stops its children;
        what is missing is the cover for the worker itself dying or pausing. The
        delay doubles while restarts keep failing fast and resets after a guard
        has lived for a minute.
        """
        loop = asyncio.get_running_loop()
        delay = backoff
        while not self._closing:
            proc = self.proc
            if proc is None:
                return
            started = loop.time()
            code = await proc.wait()
            if self._closing:
                return
            if loop.time() - started > 60:
                delay = backoff
            log.error("guard process exited; restarting it", returncode=code, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            if self._closing:
                return
            try:
                await self.start()
            except OSError as exc:
                log.error("guard process could not start", error=str(exc))
                continue
            self.restarts += 1
            log.warning("guard process restarted", pid=self.proc.pid if self.proc else None)

    def _send(self, line: str) -> None:
        """Queue a line; the lines of one event-loop turn go in one write."""
        self._out.append(line)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        lines, self._out = self._out, []
        if not lines:
            return
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            return
        try:
            self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        except (BrokenPipeError, ConnectionResetError):
            log.error("guard process is gone")

    def deadline(self, monotonic_deadline: float) -> None:
        self._deadline = monotonic_deadline
        self._send(f"D {monotonic_deadline:.6f}")

    def lease(self, lease_id: int) -> None:
        self._lease = lease_id
        self._send(f"L {lease_id}")

    def add(self, pgid: int) -> None:
        self._pgids.add(pgid)
        self._send(f"A {pgid}")

    def remove(self, pgid: int) -> None:
        self._pgids.discard(pgid)
        self._send(f"R {pgid}")

    async def close(self) -> None:
        """Clean exit: the worker has stopped its children and revoked its lease itself."""
        self._closing = True
        if self.proc is None:
            return
        self._send("Q")
        self._flush()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

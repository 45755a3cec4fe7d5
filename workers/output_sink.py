"""Ship a run's output to etcd while it runs, bounded.

Rules:

- stdout and stderr are kept apart (each segment is tagged) and interleaved in
  the order they were read, so a reader can show either stream or both.
- Output is buffered and written as a chunk at least every ``flush_interval``
  seconds while it flows, or as soon as ``chunk_size`` bytes are waiting. Chunks
  go to ``output/<job>/<run>/<seq>``; the child is never blocked by etcd (the
  pipes are drained by the executor whatever happens here).
- The per-run cap ``limit`` (:func:`run_output_limit`: the job's
  ``output_limit``, else ``worker.output_limit``, and never more than
  ``worker.max_output_limit``) keeps the *head* (the first half, shipped live) and
  the *tail* (the last half, shipped when the run ends) and writes a marker
  chunk saying how many bytes were omitted between them. Memory is bounded by
  the cap, however much the child prints.
- Bytes that are not UTF-8 are shown with backslash escapes, never dropped.
- Optionally the full output is also appended to a local file
  (``<log_dir>/<job>/<run-id>.log``); only the newest ``log_file_count`` files
  per job are kept and each stops at ``log_file_max`` bytes. The local file is
  best effort: any ``OSError`` (a full disk, a read-only or unwritable
  ``log_dir``), at open, at a write or at close, drops the local copy for the
  rest of the run with ONE warning; the run and its output in etcd go on.

A chunk's value is encoded by :mod:`scheduler.output_chunks` (the one codec,
shared with the readers in :mod:`scheduler.output_reader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import structlog

from scheduler.etcd.client import EtcdClient, EtcdError
from scheduler.keyspace import Keyspace
from scheduler.output_chunks import RawSegment, encode_chunk
from workers.executor import OutputSink

log = structlog.get_logger("etcron.output")


def run_output_limit(job_limit: int | None, default: int, most: int) -> int:
    """The output cap of one run: the job's own limit or the worker default, at most ``most``."""
    return min(job_limit or default, most)


class EtcdOutput(OutputSink):
    def __init__(
        self,
        client: EtcdClient,
        ks: Keyspace,
        job: str,
        run_id: str,
        *,
        limit: int,
        chunk_size: int = 64 * 1024,
        flush_interval: float = 0.5,
        tail: int = 4096,
        log_file: Path | None = None,
        log_file_max: int = 10 * 1024 * 1024,
        spent: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(tail=tail)
        self.spent = spent
        """True while etcd's output budget is spent (``workers.budget``): ship nothing."""
        self.client = client
        self.ks = ks
        self.job = job
        self.run_id = run_id
        self.head_budget = limit // 2
        self.tail_budget = limit - self.head_budget
        self.chunk_size = min(chunk_size, max(1024, limit // 2) if limit else chunk_size)
        self.flush_interval = flush_interval
        self.seq = 0
        self.shipped = 0
        self.omitted = 0
        self.chunks = 0
        self._pending: list[RawSegment] = []
        self._pending_bytes = 0
        self._ring: deque[RawSegment] = deque()
        self._ring_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._closed = False
        self._file: BinaryIO | None = None
        self._file_left = log_file_max
        self.log_file = log_file
        self.log_file_error = ""
        """Why the local copy was dropped ("" while it is being written or was never asked for)."""
        if log_file is not None:
            try:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(log_file, "ab")  # noqa: SIM115 - closed in flush()
            except OSError as exc:
                self._drop_file(exc)

    def _drop_file(self, exc: OSError) -> None:
        """The local log file failed: give it up for this run, with one warning."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()  # flushing the buffer may fail the same way
        if not self.log_file_error:
            self.log_file_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "local log file dropped for this run (output still goes to etcd)",
                job=self.job,
                run=self.run_id,
                path=str(self.log_file),
                error=self.log_file_error,
            )

    # called by the executor for every read; must never block
    def write(self, stream: str, data: bytes) -> None:
        super().write(stream, data)
        if self._file is not None and self._file_left > 0:
            piece = data[: self._file_left]
            try:
                self._file.write(piece)
            except OSError as exc:
                self._drop_file(exc)
            self._file_left -= len(piece)
        tag = "o" if stream == "stdout" else "e"
        now = time.time()
        head_left = self.head_budget - self.shipped - self._pending_bytes
        if head_left > 0:
            first, data = data[:head_left], data[head_left:]
            self._pending.append((tag, now, first))
            self._pending_bytes += len(first)
            if self._pending_bytes >= self.chunk_size or not data:
                self._kick.set()
        if data:
            self._ring.append((tag, now, data))
            self._ring_bytes += len(data)
            while self._ring_bytes > self.tail_budget:
                tag0, t0, first = self._ring[0]
                cut = min(len(first), self._ring_bytes - self.tail_budget)
                if cut == len(first):
                    self._ring.popleft()
                else:
                    self._ring[0] = (tag0, t0, first[cut:])
                self._ring_bytes -= cut
                self.omitted += cut
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._kick.wait()
            self._kick.clear()
            await self._ship_pending()

    async def _ship_pending(self) -> None:
        while self._pending:
            segs, size = [], 0
            while self._pending and size < self.chunk_size:
                seg = self._pending.pop(0)
                segs.append(seg)
                size += len(seg[2])
            self._pending_bytes -= size
            self.shipped += size
            await self._put(segs)

    async def _put(self, segs: list[RawSegment]) -> None:
        if self.spent():  # the budget is spent: the record keeps the tail, the rest is omitted
            self.omitted += sum(len(data) for tag, _, data in segs if tag != "m")
            return
        value = encode_chunk(self.seq, segs)
        key = self.ks.output_chunk(self.job, self.run_id, self.seq)
        self.seq += 1
        self.chunks += 1
        for delay in (0.1, 0.3, 1.0, 2.0, 0):
            try:
                await self.client.put(key, value)
                return
            except EtcdError as exc:
                if not delay:
                    log.warning("output chunk lost", job=self.job, run=self.run_id, error=str(exc))
                    return
                await asyncio.sleep(delay)

    async def flush(self) -> None:
        """End of run: ship what is pending, the omitted-bytes marker, then the tail."""
        if self._closed:
            return
        self._closed = True
        self._kick.set()
        try:
            if self._flusher is not None:
                # let it finish: cancelling it could drop a chunk it has taken but not put
                flusher, self._flusher = self._flusher, None
                await flusher
            await self._ship_pending()
            if self.omitted:
                marker = f"\n[etcron: {self.omitted} bytes omitted (output limit)]\n".encode()
                await self._put([("m", time.time(), marker)])
            if self._ring:
                self._pending, self._ring = list(self._ring), deque()
                self._pending_bytes, self._ring_bytes = self._ring_bytes, 0
                await self._ship_pending()
        finally:
            self._close_file()

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as exc:  # the buffer's last bytes did not fit
                self._drop_file(exc)


def prune_local_logs(job_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` run logs of a job directory (run ids sort by tick)."""
    try:
        files = sorted(job_dir.glob("*.log"))
    except OSError:  # an unreadable log_dir: the local copy is best effort
        return
    for old in files[: max(0, len(files) - keep)]:
        with contextlib.suppress(OSError):
            old.unlink()

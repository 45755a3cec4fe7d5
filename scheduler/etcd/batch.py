"""Group commit for exactly-once transactions: many callers, one etcd request.

A worker claims every run due in a second at about the same instant and
releases them as they end. Sent one by one, each costs a gRPC round trip in the
worker and a raft entry and a disk sync in etcd. :class:`TxnBatcher` has the
same contract as :meth:`EtcdClient.txn_once` for each caller and sends what
callers submit together as nested transactions of one request.

Rules:

- Each caller's transaction is decided by its own compares, exactly as if it
  were sent alone; callers never see each other's outcome.
- All transactions of a batch commit at one revision, which is every result's
  ``revision`` (so a claim's fencing token is still its lock's mod revision).
- One batch is in flight at a time while etcd answers fast. What is submitted
  while it flies forms the next batch: nothing waits when the worker is idle
  (the first request goes out on the next turn of the event loop), and under
  load round trips are shared. When a batch has been out for ``pipeline_after``
  (etcd commits slowly: a leader with a slow disk) the next one goes without
  waiting for it, up to ``max_in_flight``: otherwise every transaction would
  wait for the commit in flight and then for its own, twice the commit time.
  Batches in flight at once may write the same key (each transaction is still
  decided by its own compares when etcd applies it).
- etcd refuses a request that writes one key twice, so a transaction that
  writes a key already written in the forming batch waits for the next one.
  A batch holds at most ``max_batch`` transactions (etcd's ``--max-txn-ops``,
  128 by default, bounds the ops of each level) and about ``max_bytes`` of
  operations (etcd's ``--max-request-bytes`` is 1.5 MiB by default; a single
  larger transaction still goes, alone).
- A lost reply raises :class:`EtcdAmbiguous` to every caller of that batch, as
  ``txn_once`` does; each caller resolves it by re-sending its own transaction
  (``scheduler.etcd.claim_txn``). Any other error is raised to every caller.
- A caller cancelled before its batch is sent is left out of it.
- A batch goes to the client's active member. When that member stops answering
  the client cuts the batch short (``EtcdAmbiguous`` after at most a probe
  interval plus a probe deadline, not the request deadline) and moves on, so the
  callers' re-sends, and the batches queued behind it, go to a healthy member.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.etcd.client import Cmp, EtcdClient, Op, TxnResult


def _written(ops: Sequence[Op]) -> set[bytes]:
    keys: set[bytes] = set()
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            keys.add(op.request_put.key)
        elif kind == "request_delete_range":
            keys.add(op.request_delete_range.key)
    return keys


@dataclass
class _Pending:
    compare: Sequence[Cmp]
    success: Sequence[Op]
    failure: Sequence[Op]
    future: asyncio.Future[TxnResult]
    keys: set[bytes] = field(default_factory=set)
    size: int = 0


class TxnBatcher:
    def __init__(
        self,
        client: EtcdClient,
        max_batch: int = 64,
        max_bytes: int = 1024 * 1024,
        *,
        pipeline_after: float = 0.05,
        max_in_flight: int = 4,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.pipeline_after = pipeline_after
        self.max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_sent = 0.0
        self.sent = 0
        """Requests sent to etcd (batches)."""
        self.txns = 0
        """Transactions carried by them."""
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        loop = asyncio.get_running_loop()
        pending = _Pending(compare, success, failure, loop.create_future())
        pending.keys = _written(success) | _written(failure)
        pending.size = sum(op.ByteSize() for op in (*success, *failure))
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await pending.future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self._in_flight:
                full = len(self._in_flight) >= self.max_in_flight
                wait = self._last_sent + self.pipeline_after - loop.time()
                if full or wait > 0:
                    await asyncio.wait(
                        self._in_flight,
                        timeout=None if full else wait,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
            batch = self._take()
            if batch:
                task = asyncio.create_task(self._send(batch))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                self._last_sent = loop.time()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        written: set[bytes] = set()
        size = 0
        rest: list[_Pending] = []
        for p in self._queue:
            if p.future.done():  # cancelled by its caller
                continue
            full = len(batch) >= self.max_batch or (batch and size + p.size > self.max_bytes)
            if full or p.keys & written:
                rest.append(p)
                continue
            batch.append(p)
            written |= p.keys
            size += p.size
        self._queue = rest
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        self.sent += 1
        self.txns += len(batch)
        try:
            if len(batch) == 1:
                p = batch[0]
                results = [await self.client.txn_once(p.compare, p.success, p.failure)]
            else:
                results = await self.client.txn_many(
                    [(p.compare, p.success, p.failure) for p in batch]
                )
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for p in batch:
                p.future.cancel()
            raise
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    async def close(self) -> None:
        """Stop sending; callers still waiting are cancelled."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for task in list(self._in_flight):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for p in self._queue:
            p.future.cancel()
        self._queue.clear()

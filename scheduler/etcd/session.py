"""A session: one lease per process, kept alive, with a local deadline.

Rules:

- The lease is granted with ``ttl`` seconds and kept alive every ``ttl / 3``.
- The *local deadline* is ``send time of the last acknowledged keepalive + TTL``
  (monotonic clock). The server cannot expire the lease before that instant,
  because it restarted the TTL only after it received our request.
- :attr:`lost` is set ``margin`` seconds *before* the local deadline when no
  newer keepalive was acknowledged, or at once when etcd says the lease is gone.
  Whoever holds work under the lease (a running job) must stop it when ``lost``
  fires: at that point the server may still think we are alive, so the work is
  stopped before anyone else can claim it.
- A lost session stays lost; create a new :class:`Session` to go on.
- An ack that does not come within ``min(PROBE_TIMEOUT, ttl/6)`` means the
  stream is stuck (a frozen member, or a follower forwarding to a frozen
  leader): the keepalive is sent again at once on a new stream, on another
  member (``EtcdClient.pick``). The worst case (ttl 4, margin 1: the member
  freezes just before a keepalive) leaves about a second for a new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from etcd3aio._protobuf import LeaseKeepAliveRequest, LeaseStub

from scheduler.clock import Clock
from scheduler.etcd.client import PROBE_TIMEOUT, EtcdClient, EtcdError, Member

log = structlog.get_logger("etcron.session")


class Session:
    def __init__(
        self, client: EtcdClient, *, ttl: int = 6, margin: float = 1.0, clock: Clock | None = None
    ) -> None:
        if ttl < 2:
            raise ValueError("lease ttl must be at least 2 s")
        if not 0 <= margin < ttl / 2:
            raise ValueError("lease margin must be between 0 and ttl/2")
        self.client = client
        self.ttl = ttl
        self.margin = margin
        self.clock = clock or Clock()
        self.lease_id = 0
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._deadline = 0.0
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.keepalives = 0
        self.stalls = 0
        """Keepalives that got no ack in time and were sent again on a fresh stream."""
        self.on_renew: list[Callable[[float], None]] = []
        """Called with the new local deadline (monotonic) after every acknowledged keepalive."""

    async def start(self) -> Session:
        sent = self.clock.monotonic()
        self.lease_id, granted = await self.client.grant(self.ttl)
        self.ttl = granted
        self._deadline = sent + granted
        self._notify()
        self._tasks = [
            asyncio.create_task(self._keepalive(), name=f"keepalive-{self.lease_id:x}"),
            asyncio.create_task(self._watchdog(), name=f"lease-watchdog-{self.lease_id:x}"),
        ]
        log.info("session started", lease=f"{self.lease_id:x}", ttl=granted)
        return self

    @property
    def deadline(self) -> float:
        """Monotonic instant the server could expire the lease at the earliest."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds of proven lease life left (before the margin), <= 0 once lost."""
        if self.lost.is_set():
            return 0.0
        return self._deadline - self.margin - self.clock.monotonic()

    @property
    def alive(self) -> bool:
        return self.remaining() > 0

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
            if reason == "closed":
                log.info("session closed", lease=f"{self.lease_id:x}")
            else:
                log.warning("session lost", lease=f"{self.lease_id:x}", reason=reason)

    async def _watchdog(self) -> None:
        while not self.lost.is_set():
            left = self.remaining()
            if left <= 0:
                self._lose("no keepalive acknowledged before the local deadline")
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    async def _keepalive(self) -> None:
        interval = self.ttl / 3
        # An ack comes in milliseconds. One that does not come within this is on a
        # member that stopped answering (or one waiting on a leader that did): the
        # keepalive is sent again at once on a fresh stream, on another member, so
        # that it still renews the lease well before the local deadline.
        ack_timeout = min(PROBE_TIMEOUT, interval / 2)
        loop = asyncio.get_running_loop()
        stuck: Member | None = None
        failures = 0
        sent = self.clock.monotonic()
        while not self.lost.is_set():
            member = self.client.pick(avoid=stuck)
            queue: asyncio.Queue[None] = asyncio.Queue()
            stub = LeaseStub(member.channel)
            stream = stub.LeaseKeepAlive(self._requests(queue), metadata=self.client.metadata)
            try:
                while not self.lost.is_set():
                    sent = self.clock.monotonic()
                    queue.put_nowait(None)
                    async with self.client.scope(member, loop.time() + ack_timeout):
                        resp = await stream.read()
                    await self._handle(resp, sent)
                    if failures:
                        log.info(
                            "keepalive renewed again",
                            lease=f"{self.lease_id:x}",
                            member=member.endpoint,
                            failures=failures,
                        )
                    failures = 0
                    stuck = None
                    await asyncio.sleep(interval)
            except (TimeoutError, grpc.aio.AioRpcError, EtcdError) as exc:
                failures += 1
                stalled = isinstance(exc, TimeoutError)
                if self.client.observe is not None:
                    self.client.observe("keepalive", self.clock.monotonic() - sent, False)
                if failures == 1:
                    log.info(
                        "keepalive failed, retrying",
                        lease=f"{self.lease_id:x}",
                        member=member.endpoint,
                        error=f"no ack within {ack_timeout:.2f}s" if stalled else str(exc)[:200],
                    )
                if stalled:
                    self.stalls += 1
                    stuck = member
                    self.client.stalled(member)
                else:
                    await asyncio.sleep(min(0.2, interval))
            finally:
                stream.cancel()

    async def _requests(self, queue: asyncio.Queue[None]) -> AsyncIterator[Any]:
        while True:
            await queue.get()
            yield LeaseKeepAliveRequest(ID=self.lease_id)

    async def _handle(self, resp: Any, sent: float) -> None:
        if resp is grpc.aio.EOF:
            raise EtcdError("keepalive stream closed")
        if resp.TTL <= 0:
            self._lose("etcd reports the lease expired or revoked")
            return
        self.keepalives += 1
        if self.client.observe is not None:
            self.client.observe("keepalive", self.clock.monotonic() - sent, True)
        self._deadline = max(self._deadline, sent + resp.TTL)
        self._changed.set()
        self._notify()

    def _notify(self) -> None:
        for fn in self.on_renew:
            fn(self._deadline)

    async def close(self, *, revoke: bool = True) -> None:
        """Stop keeping the lease alive; revoke it (its keys vanish at once)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if revoke and self.lease_id and not self.lost.is_set():
            with contextlib.suppress(EtcdError):
                await self.client.revoke(self.lease_id)
        self._lose("closed")

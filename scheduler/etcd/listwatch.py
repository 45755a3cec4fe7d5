"""A list-watch that cannot lose events.

Rules (this is the contract consumers rely on):

1. The first item is a :class:`Snapshot` of every key under the prefix, read at
   one revision ``R``.
2. Then :class:`Batch` items follow, each holding the events of one etcd
   revision range, in revision order, starting at ``R + 1``. Every change after
   ``R`` is delivered exactly once.
3. When the stream breaks (network, member restart, leader loss), the watch is
   reopened from *the last delivered revision + 1*, never from "now"; nothing is
   skipped and nothing is repeated.
4. When that revision has been compacted, a fresh :class:`Snapshot` is listed
   and delivered; the consumer must replace its state with it (keys missing
   from it were deleted while we could not see).

The client library's own watch resume is not used: it restarts from the last
response's header revision (skipping events after a reconnect) and swallows
compaction. Watches ask for ``require leader``, so a member cut off from its
cluster ends the stream instead of going silent.

A member can also go silent with its sockets open (SIGSTOP, a stuck disk). So a
watch that has received nothing for ``idle`` seconds sends a progress request
(``WatchProgressRequest``, answered by the member itself even during an
election); no answer within ``stall`` means the member is stuck, and the watch
is resumed at once on another member (``EtcdClient.pick``), by rule 3. (A watch
on the member the client leaves is cut at once, like every wait on it, so
``idle``, 3 s, only bounds the rarer stall of a watch's own member.) Watches
also ask for progress notifications (``progress_notify``), which a member sends
on its own at ``--experimental-watch-progress-notify-interval``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from etcd3aio import prefix_range_end
from etcd3aio._protobuf import WatchCreateRequest, WatchRequest, WatchStub
from etcd3aio._protobuf import rpc_pb2 as _rpc_pb2  # type: ignore[attr-defined]

from scheduler.etcd.client import (
    PROBE_TIMEOUT,
    EtcdAuthError,
    EtcdClient,
    EtcdCompacted,
    EtcdUnavailable,
    KeyValue,
    Member,
)

log = structlog.get_logger("etcron.listwatch")

WatchProgressRequest = _rpc_pb2.WatchProgressRequest


class EventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    kv: KeyValue
    """For DELETE: the key and its deletion revision (``mod_revision``); value empty."""

    @property
    def key(self) -> str:
        return self.kv.key


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    kvs: dict[str, KeyValue]


@dataclass(frozen=True, slots=True)
class Batch:
    revision: int
    events: list[Event] = field(default_factory=list)


class _Compacted(Exception):
    pass


class _Stalled(EtcdUnavailable):
    """The member stopped answering the watch: resume elsewhere at once."""


@dataclass
class WatchStats:
    lists: int = 0
    reconnects: int = 0
    compactions: int = 0
    events: int = 0
    stalls: int = 0
    progress: int = 0


class ListWatch:
    """Iterate ``Snapshot`` then ``Batch`` items for a key prefix, forever.

    ``async for item in ListWatch(client, "/cron/jobs/"):`` — see the module
    docstring for the delivery rules. The iterator only ends when cancelled;
    errors that retrying cannot fix (authentication, permission) are raised.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        *,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        page: int = 1000,
        idle: float = 3.0,
        stall: float = PROBE_TIMEOUT,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.page = page
        self.idle = idle
        """A watch quiet for this long sends a progress request..."""
        self.stall = stall
        """...which must be answered within this, or the watch moves to another member."""
        self._stuck: Member | None = None
        self.stats = WatchStats()
        self.revision = 0
        """The last revision delivered (snapshot or batch)."""

    def __aiter__(self) -> AsyncIterator[Snapshot | Batch]:
        return self._run()

    async def _list(self) -> Snapshot:
        delay = self.backoff
        while True:
            try:
                kvs, rev = await self.client.get_prefix(self.prefix, page=self.page)
            except (EtcdUnavailable, EtcdCompacted) as exc:
                log.warning(
                    "list failed, retrying", prefix=self.prefix, error=str(exc), delay=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            self.stats.lists += 1
            return Snapshot(rev, {kv.key: kv for kv in kvs})

    async def _run(self) -> AsyncIterator[Snapshot | Batch]:
        while True:
            snap = await self._list()
            self.revision = snap.revision
            yield snap
            delay = self.backoff
            while True:
                try:
                    async for batch in self._watch(self.revision + 1):
                        self.revision = batch.revision
                        delay = self.backoff
                        yield batch
                except _Compacted:
                    self.stats.compactions += 1
                    log.warning("watch revision compacted, listing again", prefix=self.prefix)
                    break
                except _Stalled as exc:
                    self.stats.reconnects += 1
                    log.warning(
                        "watch stalled, resuming on another member",
                        prefix=self.prefix,
                        from_revision=self.revision + 1,
                        error=str(exc),
                    )
                except EtcdUnavailable as exc:
                    self.stats.reconnects += 1
                    log.info(
                        "watch broken, resuming",
                        prefix=self.prefix,
                        from_revision=self.revision + 1,
                        error=str(exc),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)

    async def _watch(self, start_revision: int) -> AsyncIterator[Batch]:
        member = self.client.pick(avoid=self._stuck)
        self._stuck = None
        stub = WatchStub(member.channel)
        key = self.prefix.encode()
        create = WatchCreateRequest(
            key=key,
            range_end=prefix_range_end(key),
            start_revision=start_revision,
            prev_kv=False,
            progress_notify=True,
            # a response larger than the server's send limit comes in fragments
            # (etcd 3.4+); they are joined before anything is delivered, so the
            # last delivered revision is always complete
            fragment=True,
        )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queue.put_nowait(WatchRequest(create_request=create))

        async def requests() -> AsyncIterator[Any]:
            while (req := await queue.get()) is not None:
                yield req

        loop = asyncio.get_running_loop()
        metadata = (*self.client.metadata, ("hasleader", "true"))
        stream = stub.Watch(requests(), metadata=metadata)
        asked = False
        pieces: list[Event] = []
        # grpc.aio cancels the whole call when a read is cancelled: the read runs
        # as its own task, and only the wait for it has a deadline
        reading: asyncio.Future[Any] | None = None
        try:
            while True:
                if reading is None:
                    reading = asyncio.ensure_future(stream.read())
                scope = self.client.scope(
                    member, loop.time() + (self.stall if asked else self.idle), via_leader=False
                )
                try:
                    async with scope:
                        await asyncio.shield(reading)
                except TimeoutError:
                    if not asked and not scope.aborted:
                        # quiet for a while: the member must answer a progress request
                        asked = True
                        queue.put_nowait(WatchRequest(progress_request=WatchProgressRequest()))
                        continue
                    self.stats.stalls += 1
                    self._stuck = member
                    self.client.stalled(member)
                    raise _Stalled(
                        scope.aborted
                        or f"watch on {member.endpoint}: no answer to a progress request "
                        f"within {self.stall:.2f}s"
                    ) from None
                resp = reading.result()
                reading = None
                if asked:
                    self.stats.progress += 1
                asked = False
                if resp is grpc.aio.EOF:
                    raise EtcdUnavailable("watch stream ended")
                if resp.compact_revision:
                    raise _Compacted()
                if resp.canceled:
                    reason = resp.cancel_reason or "watch canceled by server"
                    if "permission" in reason.lower() or "auth" in reason.lower():
                        raise EtcdAuthError(reason)
                    raise EtcdUnavailable(reason)
                if not resp.events and not resp.fragment:
                    continue  # created, progress: the member is alive
                pieces.extend(
                    Event(
                        EventKind.DELETE if ev.type == 1 else EventKind.PUT,
                        KeyValue.from_pb(ev.kv),
                    )
                    for ev in resp.events
                )
                if resp.fragment or not pieces:
                    continue  # more of this response to come
                events, pieces = pieces, []
                self.stats.events += len(events)
                yield Batch(events[-1].kv.mod_revision, events)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise EtcdAuthError(exc.details() or code.name) from exc
            raise EtcdUnavailable(f"{code.name}: {exc.details() or ''}") from exc
        finally:
            if reading is not None:
                reading.cancel()
            queue.put_nowait(None)
            stream.cancel()

"""The one place that talks to etcd.

Only the ``scheduler.etcd`` package imports the etcd client library (etcd3aio);
everything above it speaks in keys, values, revisions and the small types below.

Rules for callers:

- Every unary call has a deadline (``request_timeout`` from the config).
- Reads are linearizable unless a method says otherwise.
- ``txn_once`` sends a transaction exactly once: the library's own retries are
  off, because a retried claim can commit twice from the caller's point of view
  (the first attempt committed, its reply was lost, the retry fails its compare).
  Callers that get :class:`EtcdAmbiguous` decide from what is in etcd.


Failover between members (gray failures) is :mod:`scheduler.etcd.routing`'s, which
states its rules. The layer is split by what it does: errors in
:mod:`scheduler.etcd.errors`; compares, ops and results in :mod:`scheduler.etcd.txn`;
one member and its channel in :mod:`scheduler.etcd.members`; routing and retries in
:mod:`scheduler.etcd.routing`; maintenance calls in :mod:`scheduler.etcd.maintenance`;
the client and its key-value and lease calls here. Every public name of those modules
is importable from here too (callers outside ``scheduler.etcd`` do so).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from etcd3aio import SortOrder, prefix_range_end
from etcd3aio._protobuf import RequestOp, TxnRequest

from scheduler.config import EtcdConfig
from scheduler.etcd.errors import (
    EtcdAmbiguous,
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdNoSpace,
    EtcdTooLarge,
    EtcdUnavailable,
)
from scheduler.etcd.maintenance import Maintenance
from scheduler.etcd.members import (
    _CHANNEL_OPTIONS,
    FIRST_PAGE,
    HEALTHY,
    IDLE_PROBE,
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    MAX_RECEIVE,
    NO_LEADER,
    PAGE_BYTES,
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    SLOW_REQUEST,
    UNRESPONSIVE,
    Member,
    Scope,
)
from scheduler.etcd.routing import MemberRouter
from scheduler.etcd.txn import (
    EQUAL,
    GREATER,
    LESS,
    NOT_EQUAL,
    Cmp,
    KeyValue,
    Op,
    TxnResult,
    TxnSender,
    cmp_absent,
    cmp_created,
    cmp_mod,
    cmp_unchanged,
    cmp_value,
    op_delete,
    op_delete_range,
    op_get,
    op_newest,
    op_put,
    txn_result,
)

__all__ = [  # re-exported too: callers outside scheduler.etcd import these from here
    "EQUAL",
    "FIRST_PAGE",
    "GREATER",
    "HEALTHY",
    "IDLE_PROBE",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "LESS",
    "MAX_RECEIVE",
    "NOT_EQUAL",
    "NO_LEADER",
    "PAGE_BYTES",
    "PROBE_INTERVAL",
    "PROBE_TIMEOUT",
    "SLOW_REQUEST",
    "UNRESPONSIVE",
    "_CHANNEL_OPTIONS",
    "Cmp",
    "EtcdAmbiguous",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdNoSpace",
    "EtcdTooLarge",
    "EtcdUnavailable",
    "KeyValue",
    "Member",
    "MemberRouter",
    "Op",
    "Scope",
    "TxnResult",
    "TxnSender",
    "cmp_absent",
    "cmp_created",
    "cmp_mod",
    "cmp_unchanged",
    "cmp_value",
    "op_delete",
    "op_delete_range",
    "op_get",
    "op_newest",
    "op_put",
]


class EtcdClient(Maintenance):
    """A connected etcd client with deadlines, error mapping and member failover.

    Layers, each a class with one job: :class:`MemberRouter` (which member, retries,
    failover), :class:`Maintenance` (status, alarms, compaction), and this one
    (connection, authentication, key-value and lease calls).
    """

    def __init__(self, config: EtcdConfig) -> None:
        super().__init__(config)
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._token_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, config: EtcdConfig) -> EtcdClient:
        """Open the channels, pick a member, authenticate if configured, and
        check the cluster answers."""
        client = cls(config)
        try:
            if len(client._members) > 1:
                await client._probe_all(min(PROBE_TIMEOUT, config.connect_timeout))
                best = client._best()
                if best.state > client.active.state:
                    client._active = best.index
            client._monitor_task = asyncio.create_task(client._monitor(), name="etcd-monitor")
            if config.username:
                await client._authenticate()
                client._token_task = asyncio.create_task(client._refresh_token(), name="etcd-token")
            await client.revision(timeout=config.connect_timeout)
        except BaseException:
            await client.close()
            raise
        return client

    async def _authenticate(self) -> None:
        resp = await self._call(
            "authenticate",
            lambda m, t: m.auth.authenticate(
                self.config.username or "", self.config.resolved_password() or "", timeout=t
            ),
            timeout=self.config.connect_timeout,
        )
        self._metadata = (("token", resp.token),)
        for m in self._members:
            m.set_token(resp.token)

    async def login(self) -> None:
        """Authenticate now, with the config's user (``connect`` does it; this is for
        a client built with the constructor alone, as ``scheduler.etcd.probe`` does)."""
        await self._authenticate()

    async def _refresh_token(self) -> None:
        while True:
            await asyncio.sleep(120)
            with contextlib.suppress(EtcdError):
                await self._authenticate()

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._token_task, self._monitor_task) if t is not None]
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for m in self._members:
            await m.channel.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for streams opened by this package (auth token)."""
        return self._metadata

    # reads ----------------------------------------------------------------

    async def revision(self, *, timeout: float | None = None) -> int:
        """The cluster's current revision (read under ``<prefix>/jobs/``, which every
        etcron role may read, so it works with etcd auth on)."""
        jobs = f"{self.config.prefix}/jobs/"
        resp = await self._call(
            "read revision",
            lambda m, t: m.kv.get(jobs, prefix_range_end(jobs), count_only=True, timeout=t),
            timeout=timeout,
        )
        return int(resp.header.revision)

    async def get(self, key: str) -> tuple[KeyValue | None, int]:
        """The key (or None) and the revision it was read at."""
        resp = await self._call(f"get {key}", lambda m, t: m.kv.get(key, timeout=t))
        kv = KeyValue.from_pb(resp.kvs[0]) if resp.kvs else None
        return kv, int(resp.header.revision)

    async def get_prefix(
        self, prefix: str, *, revision: int = 0, page: int = 1000, keys_only: bool = False
    ) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` at one revision (see :meth:`pages`)."""
        out: list[KeyValue] = []
        rev = revision
        async for kvs, at in self.pages(prefix, revision=revision, page=page, keys_only=keys_only):
            out.extend(kvs)
            rev = at
        return out, rev

    async def pages(
        self, prefix: str, *, revision: int = 0, page: int = 1000, keys_only: bool = False
    ) -> AsyncIterator[tuple[list[KeyValue], int]]:
        """The keys under ``prefix`` at one revision, a page at a time, with that revision.

        Pages are bounded by keys (``page``) and by bytes: the number of keys
        asked for follows the sizes seen so far, aiming at :data:`PAGE_BYTES`,
        and a page too large to receive is asked for again with fewer keys
        (down to one key, which always fits). Every page is read at the
        revision of the first, so the pages make one consistent snapshot.
        Raises :class:`EtcdCompacted` if that revision is compacted while
        paging (the caller lists again).
        """
        end = prefix_range_end(prefix)
        start: bytes = prefix.encode()
        rev = revision
        limit = min(page, FIRST_PAGE)  # the sizes are not known yet
        while True:
            try:
                resp = await self._call(
                    f"list {prefix}", functools.partial(_page, start, end, rev, limit, keys_only)
                )
            except EtcdTooLarge:
                if limit <= 1:
                    raise
                limit = max(1, limit // 8)
                continue
            if rev == 0:
                rev = int(resp.header.revision)
            kvs = [KeyValue.from_pb(kv) for kv in resp.kvs]
            yield kvs, rev
            if not resp.more or not kvs:
                return
            size = sum(len(kv.value) + len(kv.key) for kv in kvs)
            limit = max(1, min(page, PAGE_BYTES * len(kvs) // max(1, size)))
            start = bytes(resp.kvs[-1].key) + b"\x00"

    async def range(
        self,
        start: str,
        end: str,
        *,
        limit: int,
        newest_first: bool = False,
        keys_only: bool = False,
    ) -> tuple[list[KeyValue], bool]:
        """At most ``limit`` keys in ``[start, end)`` in key order (descending with
        ``newest_first``), and whether more keys are in the range. One request:
        the caller pages by moving ``start`` or ``end`` past the last key."""
        order = SortOrder.DESCEND if newest_first else SortOrder.NONE
        resp = await self._call(
            f"range {start}",
            lambda m, t: m.kv.get(
                start, end, limit=limit, sort_order=order, keys_only=keys_only, timeout=t
            ),
        )
        return [KeyValue.from_pb(kv) for kv in resp.kvs], bool(resp.more)

    async def count_prefix(self, prefix: str) -> int:
        resp = await self._call(
            f"count {prefix}",
            lambda m, t: m.kv.get(prefix, prefix_range_end(prefix), count_only=True, timeout=t),
        )
        return int(resp.count)

    # writes ---------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        resp = await self._call(
            f"put {key}", lambda m, t: m.kv.put(key, value, lease=lease, timeout=t)
        )
        return int(resp.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete a key (or every key under a prefix); returns how many were deleted."""
        end = prefix_range_end(key) if prefix else None
        resp = await self._call(f"delete {key}", lambda m, t: m.kv.delete(key, end, timeout=t))
        return int(resp.deleted)

    async def delete_range(self, start: str, end: str) -> int:
        """Delete every key in ``[start, end)``; returns how many were deleted."""
        resp = await self._call(f"delete {start}", lambda m, t: m.kv.delete(start, end, timeout=t))
        return int(resp.deleted)

    async def txn(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """A transaction for idempotent work (reads, CAS updates): it may be resent."""
        resp = await self._call("txn", lambda m, t: m.kv.txn(compare, success, failure, timeout=t))
        return txn_result(resp, int(resp.header.revision))

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Send a transaction exactly once.

        Raises :class:`EtcdAmbiguous` when the request may have reached etcd but
        no reply came back: it may have committed. The caller must read etcd to
        find out (see ``scheduler.etcd.claim_txn``); its resend goes to the member
        that is active then, which is another one if this one stopped answering.
        """
        resp = await self._call(
            "txn", lambda m, t: m.kv.txn(compare, success, failure, timeout=t), once=True
        )
        return txn_result(resp, int(resp.header.revision))

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Cmp], Sequence[Op], Sequence[Op]]]
    ) -> list[TxnResult]:
        """Send independent transactions exactly once, as one etcd transaction.

        Each ``(compare, success, failure)`` becomes a nested transaction of an
        unconditional outer one: each is decided by its own compares, all apply
        at one revision (every result's ``revision``), and none may write a key
        another one writes (etcd refuses the whole request). Lost replies raise
        :class:`EtcdAmbiguous`, as for :meth:`txn_once`.
        """
        nested = [
            RequestOp(request_txn=TxnRequest(compare=list(c), success=list(s), failure=list(f)))
            for c, s, f in txns
        ]
        resp = await self._call("txn", lambda m, t: m.kv.txn([], nested, [], timeout=t), once=True)
        revision = int(resp.header.revision)
        return [txn_result(r.response_txn, revision) for r in resp.responses]

    # leases ---------------------------------------------------------------

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL)."""
        resp = await self._call("lease grant", lambda m, t: m.lease.grant(ttl, timeout=t))
        return int(resp.ID), int(resp.TTL)

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._call("lease revoke", lambda m, t: m.lease.revoke(lease_id, timeout=t))
        except EtcdError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, grpc.aio.AioRpcError)
                and cause.code() == grpc.StatusCode.NOT_FOUND
            ):
                return
            if "not found" in str(exc).lower():
                return
            raise

    async def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL in seconds, -1 when the lease does not exist."""
        resp = await self._call("lease ttl", lambda m, t: m.lease.time_to_live(lease_id, timeout=t))
        return int(resp.TTL)


async def _page(
    start: bytes, end: bytes, rev: int, page: int, keys_only: bool, m: Member, timeout: float
) -> Any:
    return await m.kv.get(
        start, end, revision=rev, limit=page, keys_only=keys_only, timeout=timeout
    )

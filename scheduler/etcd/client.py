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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import etcd3aio
import grpc
from etcd3aio import Etcd3Client, prefix_range_end
from etcd3aio._protobuf import RequestOp, TxnRequest
from etcd3aio.kv import KVService

from scheduler.config import EtcdConfig

Op = Any  # an etcd RequestOp; built only with the helpers below
Cmp = Any  # an etcd Compare; built only with the helpers below


class EtcdError(Exception):
    """etcd refused or could not be reached."""


class EtcdUnavailable(EtcdError):
    """No answer from the cluster (network, no leader, deadline)."""


class EtcdAmbiguous(EtcdUnavailable):
    """A write was sent but no reply came back: it may or may not have committed."""


class EtcdAuthError(EtcdError):
    """Authentication failed or the user lacks a permission."""


class EtcdCompacted(EtcdError):
    """A revision that was asked for has been compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KeyValue:
        return cls(
            key=kv.key.decode("utf-8", "replace"),
            value=bytes(kv.value),
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[list[KeyValue]]
    """For each op of the branch that ran: the keys a Range op returned ([] for writes)."""


def _txn_result(resp: Any, revision: int) -> TxnResult:
    responses: list[list[KeyValue]] = []
    for r in resp.responses:
        if r.WhichOneof("response") == "response_range":
            responses.append([KeyValue.from_pb(kv) for kv in r.response_range.kvs])
        else:
            responses.append([])
    return TxnResult(bool(resp.succeeded), revision, responses)


class TxnSender(Protocol):
    """What claims and releases are sent through: an :class:`EtcdClient`, or a
    ``scheduler.etcd.batch.TxnBatcher`` that shares requests between callers."""

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult: ...


_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _map_error(exc: BaseException, what: str) -> EtcdError:
    """Unavailable: worth retrying. Auth: fix credentials. Anything else: a request bug."""
    if isinstance(exc, (etcd3aio.EtcdUnauthenticatedError, etcd3aio.EtcdPermissionDeniedError)):
        return EtcdAuthError(f"{what}: {exc}")
    if isinstance(exc, grpc.aio.AioRpcError):
        code, details = exc.code(), exc.details() or ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return EtcdAuthError(f"{what}: {details}")
        if "authentication failed" in details or "invalid auth token" in details:
            return EtcdAuthError(f"{what}: {details}")
        if code == grpc.StatusCode.OUT_OF_RANGE:
            return EtcdCompacted(0)
        if code in _RETRYABLE:
            return EtcdUnavailable(f"{what}: {code.name} {details}".strip())
        return EtcdError(f"{what}: {code.name} {details}".strip())
    if isinstance(exc, (TimeoutError, etcd3aio.EtcdError)):
        return EtcdUnavailable(f"{what}: {exc or type(exc).__name__}")
    return EtcdError(f"{what}: {exc}")


def _resolve(endpoint: str) -> str:
    """etcd3aio dials ``ipv4:`` targets: turn host names into addresses."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"etcd endpoint must be host:port, got {endpoint!r}")
    host = host.removeprefix("https://").removeprefix("http://")
    try:
        socket.inet_aton(host)
        return f"{host}:{port}"
    except OSError:
        pass
    infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    return f"{infos[0][4][0]}:{port}"


class EtcdClient:
    """A connected etcd client with deadlines and error mapping."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.timeout = config.request_timeout
        tls: dict[str, bytes | None] = {}
        if config.ca_file is not None:
            tls["ca_cert"] = config.ca_file.read_bytes()
            if config.cert_file is not None:
                tls["cert_chain"] = config.cert_file.read_bytes()
            if config.key_file is not None:
                tls["cert_key"] = config.key_file.read_bytes()
        server_name = config.tls_server_name
        if tls and server_name is None:
            server_name = config.endpoints[0].rpartition(":")[0]
        self._raw = Etcd3Client(
            [_resolve(e) for e in config.endpoints],
            tls_server_name=server_name if tls else None,
            **tls,  # type: ignore[arg-type]
        )
        self._token_task: asyncio.Task[None] | None = None

    # lifecycle ------------------------------------------------------------

    @classmethod
    async def connect(cls, config: EtcdConfig) -> EtcdClient:
        """Open the channel, authenticate if configured, and check the cluster answers."""
        client = cls(config)
        await client._raw.connect()
        try:
            if config.username:
                await client._authenticate()
                client._token_task = asyncio.create_task(client._refresh_token(), name="etcd-token")
            await client.revision(timeout=config.connect_timeout)
        except BaseException:
            await client.close()
            raise
        return client

    async def _authenticate(self) -> None:
        assert self._raw.auth is not None
        try:
            resp = await self._raw.auth.authenticate(
                self.config.username or "",
                self.config.resolved_password() or "",
                timeout=self.config.connect_timeout,
            )
        except Exception as exc:
            raise _map_error(exc, "authenticate") from exc
        self._raw.set_token(resp.token)

    async def _refresh_token(self) -> None:
        while True:
            await asyncio.sleep(120)
            with contextlib.suppress(EtcdError):
                await self._authenticate()

    async def close(self) -> None:
        if self._token_task is not None:
            self._token_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._token_task
        await self._raw.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # internals for the rest of this package -------------------------------

    @property
    def raw(self) -> Etcd3Client:
        return self._raw

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for streams opened by this package (auth token)."""
        assert self._raw.kv is not None
        return tuple(self._raw.kv._metadata)

    def _kv(self) -> KVService:
        if self._raw.kv is None:
            raise EtcdError("client is closed")
        return self._raw.kv

    # reads ----------------------------------------------------------------

    async def revision(self, *, timeout: float | None = None) -> int:
        """The cluster's current revision (read under ``<prefix>/jobs/``, which every
        etcron role may read, so it works with etcd auth on)."""
        jobs = f"{self.config.prefix}/jobs/"
        try:
            resp = await self._kv().get(
                jobs, prefix_range_end(jobs), count_only=True, timeout=timeout or self.timeout
            )
        except Exception as exc:
            raise _map_error(exc, "read revision") from exc
        return int(resp.header.revision)

    async def get(self, key: str) -> tuple[KeyValue | None, int]:
        """The key (or None) and the revision it was read at."""
        try:
            resp = await self._kv().get(key, timeout=self.timeout)
        except Exception as exc:
            raise _map_error(exc, f"get {key}") from exc
        kv = KeyValue.from_pb(resp.kvs[0]) if resp.kvs else None
        return kv, int(resp.header.revision)

    async def get_prefix(
        self, prefix: str, *, revision: int = 0, page: int = 1000, keys_only: bool = False
    ) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` at one revision, fetched in pages of ``page``.

        Every page is read at the revision of the first, so the result is one
        consistent snapshot. Raises :class:`EtcdCompacted` if that revision is
        compacted while paging (the caller lists again).
        """
        end = prefix_range_end(prefix)
        out: list[KeyValue] = []
        start: bytes = prefix.encode()
        rev = revision
        while True:
            try:
                resp = await self._kv().get(
                    start, end, revision=rev, limit=page, keys_only=keys_only, timeout=self.timeout
                )
            except Exception as exc:
                raise _map_error(exc, f"list {prefix}") from exc
            if rev == 0:
                rev = int(resp.header.revision)
            out.extend(KeyValue.from_pb(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, rev
            start = bytes(resp.kvs[-1].key) + b"\x00"

    async def count_prefix(self, prefix: str) -> int:
        try:
            resp = await self._kv().get(
                prefix, prefix_range_end(prefix), count_only=True, timeout=self.timeout
            )
        except Exception as exc:
            raise _map_error(exc, f"count {prefix}") from exc
        return int(resp.count)

    # writes ---------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        try:
            resp = await self._kv().put(key, value, lease=lease, timeout=self.timeout)
        except Exception as exc:
            raise _map_error(exc, f"put {key}") from exc
        return int(resp.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete a key (or every key under a prefix); returns how many were deleted."""
        end = prefix_range_end(key) if prefix else None
        try:
            resp = await self._kv().delete(key, end, timeout=self.timeout)
        except Exception as exc:
            raise _map_error(exc, f"delete {key}") from exc
        return int(resp.deleted)

    async def txn(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """A transaction for idempotent work (reads, CAS updates): the library may retry it."""
        return await self._txn(compare, success, failure, attempts=None)

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Send a transaction exactly once.

        Raises :class:`EtcdAmbiguous` when the request may have reached etcd but
        no reply came back: it may have committed. The caller must read etcd to
        find out (see ``scheduler.etcd.claim``).
        """
        return await self._txn(compare, success, failure, attempts=1)

    async def _txn(
        self,
        compare: Sequence[Cmp],
        success: Sequence[Op],
        failure: Sequence[Op],
        attempts: int | None,
    ) -> TxnResult:
        try:
            resp = await self._kv().txn(
                compare, success, failure, timeout=self.timeout, max_attempts=attempts
            )
        except Exception as exc:
            err = _map_error(exc, "txn")
            if attempts == 1 and isinstance(err, EtcdUnavailable):
                raise EtcdAmbiguous(str(err)) from exc
            raise err from exc
        return _txn_result(resp, int(resp.header.revision))

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
        try:
            resp = await self._kv().txn([], nested, [], timeout=self.timeout, max_attempts=1)
        except Exception as exc:
            err = _map_error(exc, "txn")
            if isinstance(err, EtcdUnavailable):
                raise EtcdAmbiguous(str(err)) from exc
            raise err from exc
        revision = int(resp.header.revision)
        return [_txn_result(r.response_txn, revision) for r in resp.responses]

    async def compact(self, revision: int) -> None:
        try:
            await self._kv().compact(revision, timeout=self.timeout)
        except Exception as exc:
            err = _map_error(exc, f"compact {revision}")
            if isinstance(err, EtcdCompacted):
                return
            raise err from exc

    async def status(self) -> dict[str, int]:
        """Leader id, raft term, revision and database size of the member that answers."""
        assert self._raw.maintenance is not None
        try:
            resp = await self._raw.maintenance.status(timeout=self.timeout)
        except Exception as exc:
            raise _map_error(exc, "status") from exc
        return {
            "leader": int(resp.leader),
            "raft_term": int(resp.raftTerm),
            "revision": int(resp.header.revision),
            "db_size": int(resp.dbSize),
            "member": int(resp.header.member_id),
        }

    # leases ---------------------------------------------------------------

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL)."""
        assert self._raw.lease is not None
        try:
            resp = await self._raw.lease.grant(ttl, timeout=self.timeout)
        except Exception as exc:
            raise _map_error(exc, "lease grant") from exc
        return int(resp.ID), int(resp.TTL)

    async def revoke(self, lease_id: int) -> None:
        assert self._raw.lease is not None
        try:
            await self._raw.lease.revoke(lease_id, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise _map_error(exc, "lease revoke") from exc
        except Exception as exc:
            if "not found" in str(exc).lower():
                return
            raise _map_error(exc, "lease revoke") from exc

    async def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL in seconds, -1 when the lease does not exist."""
        assert self._raw.lease is not None
        try:
            resp = await self._raw.lease.time_to_live(lease_id, timeout=self.timeout)
        except Exception as exc:
            raise _map_error(exc, "lease ttl") from exc
        return int(resp.TTL)


# Transaction building blocks ----------------------------------------------

LESS = 2  # etcd Compare.CompareResult values
EQUAL = 0
GREATER = 1
NOT_EQUAL = 3


def cmp_created(key: str, revision: int, result: int = EQUAL) -> Cmp:
    """Compare a key's create revision (0 means: the key does not exist)."""
    return KVService.txn_compare_create_revision(key, revision, result=result)


def cmp_mod(key: str, revision: int, result: int = EQUAL) -> Cmp:
    from etcd3aio._protobuf import Compare

    return Compare(result=result, target=Compare.MOD, key=key.encode(), mod_revision=revision)


def cmp_value(key: str, value: bytes, result: int = EQUAL) -> Cmp:
    """Compare a key's value; always false when the key does not exist."""
    return KVService.txn_compare_value(key, value, result=result)


def op_put(key: str, value: bytes, lease: int = 0) -> Op:
    return KVService.txn_op_put(key, value, lease=lease)


def op_get(key: str) -> Op:
    return KVService.txn_op_get(key)


def op_delete(key: str, *, prefix: bool = False) -> Op:
    return KVService.txn_op_delete(key, range_end=prefix_range_end(key) if prefix else None)

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

Failover (gray failures). A member that stops answering while its sockets stay
open (SIGSTOP, a stuck disk) is not seen by TCP, and gRPC's round robin keeps
sending it a share of the requests, each of which hangs to its deadline. So the
client owns the choice of member:

- One gRPC channel per endpoint. Unary calls go to one *active* member.
- A monitor probes the active member with the Maintenance ``Status`` RPC
  (local to the member: it answers during an election and without quorum),
  deadline :data:`PROBE_TIMEOUT`: within :data:`PROBE_INTERVAL` once a request
  has been waiting on it for :data:`SLOW_REQUEST` (requests take milliseconds
  when all is well), and every :data:`IDLE_PROBE` otherwise. A busy worker so
  pays for a probe only when something is slow. A member that does not
  answer, or answers without a leader while another one has a leader, is left:
  every member is probed and the best one becomes active. A failed request
  (deadline, unavailable) probes at once instead of waiting for the next turn.
- Requests in flight on a member that is left are aborted at once (the caller
  sees :class:`EtcdUnavailable`, or :class:`EtcdAmbiguous` for a write sent
  once), so callers re-send to the new member instead of waiting out the
  deadline. Idempotent calls are retried on the new member within their deadline.
- When the active member reports a new raft term, requests that were in flight
  before it are aborted the same way: a proposal forwarded to a leader that froze
  is never answered (etcd does not re-forward it to the new leader).
- Streams (the session keepalive, watches) take their member from :meth:`pick`,
  detect a stall themselves (no answer within :data:`PROBE_TIMEOUT`), report it
  with :meth:`stalled` and move; they register their waits with :meth:`scope`, so
  the two aborts above reach them too.
- gRPC keepalive pings every :data:`KEEPALIVE_TIME_MS` while calls are open: it
  tears down a transport that stopped answering (a backstop: the probes decide
  routing). etcd refuses pings more often than ``--grpc-keepalive-min-time``
  (5 s by default) and any ping without an open stream (GOAWAY
  ``too_many_pings``), hence 10 s and no pings without calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import etcd3aio
import grpc
import structlog
from etcd3aio import SortOrder, prefix_range_end
from etcd3aio._protobuf import RangeRequest, RequestOp, TxnRequest
from etcd3aio.auth import AuthService
from etcd3aio.cluster import ClusterService
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService
from etcd3aio.maintenance import AlarmType, MaintenanceService

from scheduler.config import EtcdConfig

log = structlog.get_logger("etcron.etcd")

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


class EtcdNoSpace(EtcdUnavailable):
    """etcd refuses writes: its database reached its quota (the NOSPACE alarm)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}: etcd is out of space (NOSPACE alarm: the database reached its quota, "
            "--quota-backend-bytes); writes are refused until old data is deleted, the "
            "history compacted and defragmented, and the alarm disarmed (docs/operations.md)"
        )


class EtcdTooLarge(EtcdError):
    """A response was larger than the client may receive (``MAX_RECEIVE``): ask for less."""


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
    """For each op of the branch that ran: the keys a Range op returned, the
    previous key of a Put asked for it (``prev_kv``, [] if there was none), []
    for other writes."""


def _txn_result(resp: Any, revision: int) -> TxnResult:
    responses: list[list[KeyValue]] = []
    for r in resp.responses:
        kind = r.WhichOneof("response")
        if kind == "response_range":
            responses.append([KeyValue.from_pb(kv) for kv in r.response_range.kvs])
        elif kind == "response_put" and r.response_put.HasField("prev_kv"):
            responses.append([KeyValue.from_pb(r.response_put.prev_kv)])
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


_TRANSPORT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
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
        if "database space exceeded" in details:
            return EtcdNoSpace(what)  # a definite refusal, not a member failure
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            # our own receive limit, not the member's health: never a reason to fail over
            return EtcdTooLarge(f"{what}: {details}")
        if code in _RETRYABLE:
            return EtcdUnavailable(f"{what}: {code.name} {details}".strip())
        return EtcdError(f"{what}: {code.name} {details}".strip())
    if isinstance(exc, (TimeoutError, etcd3aio.EtcdError)):
        return EtcdUnavailable(f"{what}: {exc or type(exc).__name__}")
    return EtcdError(f"{what}: {exc}")


def _host(endpoint: str) -> str:
    return endpoint.rpartition(":")[0].removeprefix("https://").removeprefix("http://")


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


PROBE_INTERVAL = 0.25
"""Seconds between two looks at the active member's waiting requests (local, cheap)."""
SLOW_REQUEST = 0.5
"""A request waiting this long on the active member makes the monitor probe it."""
IDLE_PROBE = 5.0
"""Seconds between two probes of the active member when nothing is slow."""
PROBE_TIMEOUT = 0.75
"""A member that does not answer a probe (or a stream that gets no answer) within
this is unresponsive. etcd answers ``Status`` from memory in milliseconds; the
rest is room for a loaded machine."""
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 3_000

MAX_RECEIVE = 32 * 1024 * 1024
"""Largest response the client accepts. etcd accepts values up to its
``--max-request-bytes`` (1.5 MiB by default), so one key always fits; range
reads are paged by bytes (:data:`PAGE_BYTES`) to stay well below this."""
PAGE_BYTES = 2 * 1024 * 1024
"""What one page of a range read aims at (keys per page follow the sizes seen)."""
FIRST_PAGE = 64
"""Keys asked for in the first page of a range read, before any size is known."""

_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    # a member that comes back (restart, SIGCONT) is dialled again within a second
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", MAX_RECEIVE),
]

UNRESPONSIVE, NO_LEADER, HEALTHY = 0, 1, 2
"""A member's state after its last probe (a member never probed counts as healthy)."""

T = TypeVar("T")


class Member:
    """One etcd endpoint: its own gRPC channel and service wrappers."""

    def __init__(self, index: int, endpoint: str, channel: grpc.aio.Channel) -> None:
        self.index = index
        self.endpoint = endpoint
        self.channel = channel
        self.kv = KVService(channel, max_attempts=1)
        self.lease = LeaseService(channel, max_attempts=1)
        self.maintenance = MaintenanceService(channel, max_attempts=1)
        self.auth = AuthService(channel, max_attempts=1)
        self.cluster = ClusterService(channel, max_attempts=1)
        self.state = HEALTHY
        self.leader = 0
        self.term = 0
        self.scopes: set[Scope] = set()

    def __repr__(self) -> str:
        return f"Member({self.endpoint}, state={self.state})"

    def set_token(self, token: str | None) -> None:
        for svc in (self.kv, self.lease, self.maintenance, self.auth, self.cluster):
            svc.set_token(token)


class Scope:
    """A wait on one member that failover can cut short.

    ``async with client.scope(member, deadline):`` behaves as
    ``asyncio.timeout_at(deadline)``; the client makes it expire at once (the
    body gets ``TimeoutError`` at the ``async with``) when it leaves the member,
    or, for ``via_leader`` waits, when a new leader is elected after the wait
    began. :attr:`aborted` then says why.
    """

    __slots__ = ("_timeout", "aborted", "member", "started", "via_leader")

    def __init__(self, member: Member, when: float | None, via_leader: bool) -> None:
        self.member = member
        self.via_leader = via_leader
        self.started = 0.0
        self.aborted = ""
        self._timeout = asyncio.timeout_at(when)

    async def __aenter__(self) -> Scope:
        await self._timeout.__aenter__()
        self.started = asyncio.get_running_loop().time()
        self.member.scopes.add(self)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self.member.scopes.discard(self)
        await self._timeout.__aexit__(et, exc, tb)
        return None

    def abort(self, why: str) -> None:
        if self.aborted or self._timeout.expired():
            return
        self.aborted = why
        self._timeout.reschedule(asyncio.get_running_loop().time())


class EtcdClient:
    """A connected etcd client with deadlines, error mapping and member failover."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.timeout = config.request_timeout
        ca = cert = key = None
        if config.ca_file is not None:
            ca = config.ca_file.read_bytes()
            cert = config.cert_file.read_bytes() if config.cert_file is not None else None
            key = config.key_file.read_bytes() if config.key_file is not None else None
        self._members: list[Member] = []
        for i, endpoint in enumerate(config.endpoints):
            target = f"ipv4:{_resolve(endpoint)}"
            if ca is None:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            else:
                name = config.tls_server_name or _host(endpoint)
                creds = grpc.ssl_channel_credentials(
                    root_certificates=ca, private_key=key, certificate_chain=cert
                )
                options = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", name)]
                channel = grpc.aio.secure_channel(target, creds, options=options)
            self._members.append(Member(i, endpoint, channel))
        # spread clients over the members; the first probe may move it
        self._active = random.randrange(len(self._members))
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._term = 0
        self._kick = asyncio.Event()
        self._token_task: asyncio.Task[None] | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self.switches = 0
        """How many times the active member changed."""
        self.aborts = 0
        """Requests and stream waits cut short by failover."""
        self.probes = 0
        """Status probes sent."""
        self.observe: Callable[[str, float, bool], None] | None = None
        """Told ``(what, seconds, ok)`` when a request ends (``scheduler.metrics``)."""

    # lifecycle ------------------------------------------------------------

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

    # failover -------------------------------------------------------------

    @property
    def active(self) -> Member:
        """The member unary calls go to."""
        return self._members[self._active]

    @property
    def members(self) -> list[Member]:
        return list(self._members)

    @property
    def raw(self) -> Member:
        """The active member's service wrappers (admin tools and tests)."""
        return self.active

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for streams opened by this package (auth token)."""
        return self._metadata

    def pick(self, avoid: Member | None = None) -> Member:
        """The member to open a stream on: the active one, unless ``avoid`` (a
        member that just stalled a stream) is it and another one looks as good."""
        return self._best(avoid)

    def stalled(self, member: Member) -> None:
        """A stream on ``member`` got no answer in time: probe it now."""
        if member is self.active:
            self._kick.set()
        elif not self._closed:
            task = asyncio.create_task(self._check_other(member))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def scope(self, member: Member, when: float | None, *, via_leader: bool = True) -> Scope:
        """A deadline (loop time) for a wait on ``member`` that failover can cut short."""
        return Scope(member, when, via_leader)

    def _best(self, avoid: Member | None = None) -> Member:
        n = len(self._members)

        def rank(m: Member) -> tuple[float, int]:
            score = m.state - (1.5 if m is avoid else 0.0)
            return (-score, (m.index - self._active) % n)

        return min(self._members, key=rank)

    async def _probe(self, m: Member, timeout: float) -> None:
        """Ask ``m`` for its status; update its state (and abort on a new term)."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.probes += 1
        try:
            resp = await m.maintenance.status(timeout=timeout)
        except (TimeoutError, etcd3aio.EtcdConnectionError, etcd3aio.EtcdTransientError):
            m.state = UNRESPONSIVE
            return
        except grpc.aio.AioRpcError as exc:
            # any other answer (auth, say) still proves the member is responsive
            m.state = UNRESPONSIVE if exc.code() in _TRANSPORT else HEALTHY
            return
        except etcd3aio.EtcdError:
            m.state = HEALTHY
            return
        m.leader, m.term = int(resp.leader), int(resp.raftTerm)
        m.state = HEALTHY if m.leader else NO_LEADER
        if m.leader and m.term > self._term:
            if self._term:
                self._abort(
                    lambda s: s.via_leader and s.started < sent,
                    f"new etcd leader (term {m.term})",
                )
            self._term = m.term

    async def _probe_all(self, timeout: float) -> None:
        await asyncio.gather(*(self._probe(m, timeout) for m in self._members))

    def _abort(
        self, which: Callable[[Scope], bool], why: str, member: Member | None = None
    ) -> None:
        for m in [member] if member is not None else self._members:
            for s in list(m.scopes):
                if which(s):
                    s.abort(why)
                    self.aborts += 1

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            kicked = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL):
                    await self._kick.wait()
                    kicked = True
            self._kick.clear()
            now = loop.time()
            if not (kicked or now - last >= IDLE_PROBE or self._slow(now)):
                continue
            last = now
            try:
                await self._check()
            except Exception as exc:  # never let the monitor die
                log.warning("etcd member probe failed", error=repr(exc)[:200])

    def _slow(self, now: float) -> bool:
        """Has a request (not a stream) been waiting on the active member too long?"""
        return any(s.via_leader and now - s.started >= SLOW_REQUEST for s in self.active.scopes)

    async def _check(self) -> None:
        m = self.active
        await self._probe(m, PROBE_TIMEOUT)
        if m.state == HEALTHY or len(self._members) == 1:
            return
        await asyncio.gather(*(self._probe(x, PROBE_TIMEOUT) for x in self._members if x is not m))
        if m is not self.active:
            return
        best = self._best()
        if best.state > m.state:
            self._switch(best)

    async def _check_other(self, m: Member) -> None:
        await self._probe(m, PROBE_TIMEOUT)
        if m.state == UNRESPONSIVE:
            self._abort(lambda s: True, f"etcd member {m.endpoint} unresponsive", m)

    def _switch(self, to: Member) -> None:
        old = self.active
        self._active = to.index
        self.switches += 1
        why = "unresponsive" if old.state == UNRESPONSIVE else "without a leader"
        log.warning(f"etcd member {why}, switching", member=old.endpoint, to=to.endpoint)
        self._abort(lambda s: True, f"etcd member {old.endpoint} {why}", old)

    async def _call(
        self,
        what: str,
        fn: Callable[[Member, float], Awaitable[T]],
        *,
        once: bool = False,
        timeout: float | None = None,
    ) -> T:
        """One unary call on the active member, within one deadline.

        ``once``: never resend (a lost reply raises :class:`EtcdAmbiguous`);
        otherwise an unavailable member is retried, on the new member after a
        failover, until the deadline.
        """
        if self.observe is None:
            return await self._call_on(what, fn, once=once, timeout=timeout)
        sent = time.perf_counter()
        try:
            result = await self._call_on(what, fn, once=once, timeout=timeout)
        except EtcdError:
            self.observe(what, time.perf_counter() - sent, False)
            raise
        self.observe(what, time.perf_counter() - sent, True)
        return result

    async def _call_on(
        self,
        what: str,
        fn: Callable[[Member, float], Awaitable[T]],
        *,
        once: bool,
        timeout: float | None,
    ) -> T:
        loop = asyncio.get_running_loop()
        end = loop.time() + (timeout or self.timeout)
        delay = 0.05
        while True:
            m = self.active
            scope = Scope(m, end, True)
            try:
                async with scope:
                    return await fn(m, max(0.001, end - loop.time()))
            except Exception as exc:
                err = _map_error(exc, what)
                if scope.aborted:
                    err = EtcdUnavailable(f"{what}: {scope.aborted}")
                if not isinstance(err, EtcdUnavailable) or isinstance(err, EtcdNoSpace):
                    raise err from exc
                if not scope.aborted:
                    self.stalled(m)
                if once:
                    raise EtcdAmbiguous(str(err)) from exc
                if end - loop.time() <= delay:
                    raise err from exc
                if self.active is m:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.4)

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
        return _txn_result(resp, int(resp.header.revision))

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Send a transaction exactly once.

        Raises :class:`EtcdAmbiguous` when the request may have reached etcd but
        no reply came back: it may have committed. The caller must read etcd to
        find out (see ``scheduler.etcd.claim``); its resend goes to the member
        that is active then, which is another one if this one stopped answering.
        """
        resp = await self._call(
            "txn", lambda m, t: m.kv.txn(compare, success, failure, timeout=t), once=True
        )
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
        resp = await self._call("txn", lambda m, t: m.kv.txn([], nested, [], timeout=t), once=True)
        revision = int(resp.header.revision)
        return [_txn_result(r.response_txn, revision) for r in resp.responses]

    async def compact(self, revision: int) -> None:
        try:
            await self._call(f"compact {revision}", lambda m, t: m.kv.compact(revision, timeout=t))
        except EtcdCompacted:
            return

    async def status(self) -> dict[str, int]:
        """Leader id, raft term, revision and database size of the member that answers."""
        resp = await self._call("status", lambda m, t: m.maintenance.status(timeout=t))
        return {
            "leader": int(resp.leader),
            "raft_term": int(resp.raftTerm),
            "revision": int(resp.header.revision),
            "db_size": int(resp.dbSize),
            "member": int(resp.header.member_id),
        }

    async def member_list(self) -> list[dict[str, Any]]:
        """The cluster's members: id, name, client URLs, learner or not."""
        resp = await self._call("member list", lambda m, t: m.cluster.member_list(timeout=t))
        return [
            {
                "id": int(x.ID),
                "name": str(x.name),
                "client_urls": [str(u) for u in x.clientURLs],
                "learner": bool(x.isLearner),
            }
            for x in resp.members
        ]

    async def alarms(self) -> list[str]:
        """The cluster's active alarms by name (``NOSPACE``, ``CORRUPT``), one per member."""
        resp = await self._call("alarms", lambda m, t: m.maintenance.alarms(timeout=t))
        names = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
        return [names.get(int(a.alarm), str(a.alarm)) for a in resp.alarms]

    async def disarm(self) -> int:
        """Deactivate every active alarm (each is a member and a type, as ``etcdctl
        alarm disarm`` does); returns how many."""
        resp = await self._call("alarms", lambda m, t: m.maintenance.alarms(timeout=t))
        for a in resp.alarms:
            call = functools.partial(_deactivate, int(a.alarm), int(a.memberID))
            await self._call("disarm", call)
        return len(resp.alarms)

    async def defragment_all(self, *, timeout: float = 60.0) -> int:
        """Defragment every member, one at a time (each blocks its member while it
        runs); returns how many answered."""
        done = 0
        for m in self._members:
            with contextlib.suppress(Exception):
                await m.maintenance.defragment(timeout=timeout)
                done += 1
        return done

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


async def _deactivate(kind: int, member_id: int, m: Member, timeout: float) -> Any:
    return await m.maintenance.alarm_deactivate(
        AlarmType(kind), member_id=member_id, timeout=timeout
    )


async def _page(
    start: bytes, end: bytes, rev: int, page: int, keys_only: bool, m: Member, timeout: float
) -> Any:
    return await m.kv.get(
        start, end, revision=rev, limit=page, keys_only=keys_only, timeout=timeout
    )


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


def cmp_absent(key: str) -> Cmp:
    """The key does not exist (create-only writes)."""
    return cmp_created(key, 0)


def cmp_unchanged(kv: KeyValue) -> Cmp:
    """The key is still as read: same mod revision (compare-and-swap, guarded delete)."""
    return cmp_mod(kv.key, kv.mod_revision)


def cmp_value(key: str, value: bytes, result: int = EQUAL) -> Cmp:
    """Compare a key's value; always false when the key does not exist."""
    return KVService.txn_compare_value(key, value, result=result)


def op_put(key: str, value: bytes, lease: int = 0, *, prev_kv: bool = False) -> Op:
    """A put; with ``prev_kv`` its response holds the value it replaced."""
    return KVService.txn_op_put(key, value, lease=lease, prev_kv=prev_kv)


def op_get(key: str) -> Op:
    return KVService.txn_op_get(key)


def op_newest(prefix: str, limit: int) -> Op:
    """A range read of the last ``limit`` keys under ``prefix``, in descending key order."""
    return RequestOp(
        request_range=RangeRequest(
            key=prefix.encode(),
            range_end=prefix_range_end(prefix),
            limit=limit,
            sort_order=RangeRequest.DESCEND,
            sort_target=RangeRequest.KEY,
        )
    )


def op_delete(key: str, *, prefix: bool = False) -> Op:
    return KVService.txn_op_delete(key, range_end=prefix_range_end(key) if prefix else None)


def op_delete_range(start: str, end: str) -> Op:
    """Delete every key in ``[start, end)``."""
    return KVService.txn_op_delete(start, range_end=end)

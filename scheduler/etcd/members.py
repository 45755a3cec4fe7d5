"""One etcd member as the client sees it: its gRPC channel and services
(:class:`Member`), the waits on it that failover can cut short (:class:`Scope`),
and the timings and channel options the failover rules in
:mod:`scheduler.etcd.routing` use.
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType

import grpc
from etcd3aio.auth import AuthService
from etcd3aio.cluster import ClusterService
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService
from etcd3aio.maintenance import MaintenanceService

from scheduler.config import EtcdConfig

__all__ = [
    "FIRST_PAGE",
    "HEALTHY",
    "IDLE_PROBE",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MAX_RECEIVE",
    "NO_LEADER",
    "PAGE_BYTES",
    "PROBE_INTERVAL",
    "PROBE_TIMEOUT",
    "SLOW_REQUEST",
    "UNRESPONSIVE",
    "Member",
    "Scope",
    "open_members",
]

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


def open_members(config: EtcdConfig) -> list[Member]:
    """One :class:`Member` per configured endpoint, each with its own channel (TLS
    when the config has a CA)."""
    ca = cert = key = None
    if config.ca_file is not None:
        ca = config.ca_file.read_bytes()
        cert = config.cert_file.read_bytes() if config.cert_file is not None else None
        key = config.key_file.read_bytes() if config.key_file is not None else None
    members: list[Member] = []
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
        members.append(Member(i, endpoint, channel))
    return members

"""The worker's membership: its session lease and its registration.

The session loop takes a lease, hands it to the guard, registers the worker
under ``/cron/workers/<id>`` (refusing an id a live worker holds) and, when the
session is lost, stops the runs it holds and starts over. The registration
(labels, capacity, running count, wall clock, skew) is refreshed every 2 s.

:class:`Membership` depends on the etcd client, the guard (which it tells the
lease and its deadline), the peers (whose joins prompt a fresh registration),
the job table and the run set (what the registration reports, what a lost
session stops) and the worker's standing (draining, clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog

from scheduler import __version__
from scheduler.clock import Clock
from scheduler.config import ConfigError, WorkerConfig
from scheduler.etcd.client import EtcdClient, EtcdError, EtcdUnavailable, cmp_created, op_put
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace
from scheduler.registration import WorkerRegistration
from workers.cluster_time import ClusterClock
from workers.executor import StopReason
from workers.guard import Guard
from workers.repair import Repairs
from workers.runset import RunSet
from workers.standing import Standing
from workers.state import JobTable, PeerView
from workers.tasks import Tasks

REGISTER_EVERY = 2.0


class WorkerIdInUse(ConfigError):
    """Another live worker is registered under this worker's id (a configuration
    error: ``etcron worker`` exits 2 with this one line)."""

    def __init__(self, worker_id: str, registration: bytes) -> None:
        info = WorkerRegistration.parse(registration, worker_id=worker_id)
        host = info.host if info is not None and info.host is not None else "?"
        pid = info.pid if info is not None and info.pid is not None else "?"
        super().__init__(
            f"worker id {worker_id!r} is already registered by a live worker "
            f"(host {host}, pid {pid}); "
            "give each worker its own worker.id"
        )


class Membership:
    """Owns the session and the registration; see the module docstring.

    ``session`` is the live session or None; ``session_ready`` is set while
    there is one. A lost session stops every run in ``runs``.
    """

    def __init__(
        self,
        client: EtcdClient,
        cfg: WorkerConfig,
        ks: Keyspace,
        *,
        clock: ClusterClock,
        host_clock: Clock,
        guard: Guard,
        peers: PeerView,
        table: JobTable,
        runs: RunSet,
        standing: Standing,
        tasks: Tasks,
        repairs: Repairs,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.id = cfg.id
        self.ks = ks
        self.clock = clock
        self.host_clock = host_clock
        self.guard = guard
        self.peers = peers
        self.table = table
        self.runs = runs
        self.standing = standing
        self.tasks = tasks
        self.repairs = repairs
        self.log = log
        self.session: Session | None = None
        self.session_ready = asyncio.Event()
        self._old_leases: set[int] = set()

    def lease_left(self) -> float:
        return self.session.remaining() if self.session is not None else 0.0

    async def run(self) -> None:
        """The session loop: take a session, register, and start over when it is lost."""
        delay = 0.2
        while True:
            try:
                session = Session(
                    self.client,
                    ttl=self.cfg.lease_ttl,
                    margin=self.cfg.lease_margin,
                    clock=self.clock,
                )
                session.on_renew.append(lambda d: self.guard.deadline(d - self.cfg.lease_margin))
                await session.start()
                self.guard.lease(session.lease_id)
                self.session = session
                self._old_leases.add(session.lease_id)
                await self.register(create=True)
            except EtcdUnavailable as exc:
                self.log.warning("no session, retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            self.session_ready.set()
            await session.lost.wait()
            self.session = None
            self.session_ready.clear()
            await session.close(revoke=False)
            self.tasks.background(self._revoke_later(session.lease_id))
            lost = self.runs.stop_all(StopReason.LOST, now=True)
            self.log.error("lease lost: stopped claiming, killed running jobs", runs=len(lost))

    async def _revoke_later(self, lease_id: int) -> None:
        """A lost session's lease may still live in etcd (a partition, a quorum
        loss): once etcd answers, revoke it, so its stale locks go at once."""
        for delay in (0.5, 1, 2, 4, 8, 8, 8):
            await asyncio.sleep(delay)
            with contextlib.suppress(EtcdError):
                await self.client.revoke(lease_id)
                return

    def _registration(self) -> bytes:
        return WorkerRegistration(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            labels=self.cfg.labels,
            capacity=self.cfg.capacity,
            running=len(self.runs),
            version=__version__,
            clock=self.host_clock.time(),
            skew=round(self.standing.skew, 4),
            clock_ok=self.standing.clock_ok(),
            clock_known=self.clock.known,
            draining=self.standing.draining,
            jobs=len(self.table.jobs),
            revision=self.table.revision,
            lease=self.session.lease_id if self.session else 0,
        ).encode()

    async def register(self, *, create: bool = False) -> None:
        """Write the registration (``create``: only if no live worker holds the id)."""
        session, client = self.session, self.client
        if session is None:
            return
        key = self.ks.worker(self.id)
        if create:
            res = await client.txn(
                [cmp_created(key, 0)], [op_put(key, self._registration(), lease=session.lease_id)]
            )
            if not res.succeeded:
                kv, _ = await client.get(key)
                if kv is not None and kv.lease in self._old_leases - {session.lease_id}:
                    # our own registration from a session we gave up (etcd renews
                    # every lease when it regains quorum): end that lease for good
                    await client.revoke(kv.lease)
                elif kv is not None and kv.lease != session.lease_id:
                    raise WorkerIdInUse(self.id, kv.value)
            else:
                return
        await client.put(key, self._registration(), lease=session.lease_id)

    async def register_loop(self) -> None:
        """Refresh the registration every ``REGISTER_EVERY`` seconds, and at once
        when a new worker joins (so it gets a fresh sample of our clock)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REGISTER_EVERY):
                    await self.peers.joined.wait()
            self.peers.joined.clear()
            with contextlib.suppress(EtcdError):
                await self.register()
            if self.peers.orphans and self._first_healthy():
                await self._repair_registrations()

    def _first_healthy(self) -> bool:
        """Am I the worker that repairs shared keys now (the first healthy id)?"""
        if not self.standing.clock_ok() or self.standing.draining:
            return False
        healthy = [p.id for p in self.peers.list() if p.can_claim({}) or p.id == self.id]
        return min(healthy, default=self.id) == self.id

    async def _repair_registrations(self) -> None:
        orphans = list(self.peers.orphans.values())
        try:
            n = await self.repairs.registrations(orphans)
        except EtcdError as exc:
            self.log.warning("registration repair failed", error=str(exc))
            return
        if n:
            self.log.warning("deleted registrations without a lease", count=n)

"""The worker's membership: its session lease and its registration.

The session loop takes a lease, hands it to the guard, registers the worker
under ``/cron/workers/<id>`` (refusing an id a live worker holds) and, when the
session is lost, kills the running children and starts over. The registration
(labels, capacity, running count, wall clock, skew) is refreshed every 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from scheduler import __version__
from scheduler.config import ConfigError
from scheduler.etcd.client import EtcdError, EtcdUnavailable, cmp_created, op_put
from scheduler.etcd.session import Session
from scheduler.registration import WorkerRegistration
from workers.core import WorkerCore
from workers.executor import StopReason

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


class Membership(WorkerCore):
    async def _session_loop(self) -> None:
        assert self.client is not None
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
                await self._register(create=True)
            except EtcdUnavailable as exc:
                self.log.warning("no session, retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            self._session_ready.set()
            self._check_ready()
            await session.lost.wait()
            self.session = None
            self._session_ready.clear()
            await session.close(revoke=False)
            self._background_task(self._revoke_later(session.lease_id))
            lost = list(self.runs.values())
            for h in lost:
                h.stop(StopReason.LOST, now=True)
            self.log.error("lease lost: stopped claiming, killed running jobs", runs=len(lost))

    async def _revoke_later(self, lease_id: int) -> None:
        """A lost session's lease may still live in etcd (a partition, a quorum
        loss): once etcd answers, revoke it, so its stale locks go at once."""
        assert self.client is not None
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
            skew=round(self.skew, 4),
            clock_ok=self.clock_ok(),
            clock_known=self.clock.known,
            draining=self.draining,
            jobs=len(self.table.jobs),
            revision=self.table.revision,
            lease=self.session.lease_id if self.session else 0,
        ).encode()

    async def _register(self, *, create: bool = False) -> None:
        session, client = self.session, self.client
        if session is None or client is None:
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

    async def _register_loop(self) -> None:
        """Refresh the registration every ``REGISTER_EVERY`` seconds, and at once
        when a new worker joins (so it gets a fresh sample of our clock)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REGISTER_EVERY):
                    await self.peers.joined.wait()
            self.peers.joined.clear()
            with contextlib.suppress(EtcdError):
                await self._register()
            if self.peers.orphans and self._first_healthy():
                await self._repair_registrations()

    def _first_healthy(self) -> bool:
        """Am I the worker that repairs shared keys now (the first healthy id)?"""
        if not self.clock_ok() or self.draining or self.repairs is None:
            return False
        healthy = [p.id for p in self.peers.list() if p.can_claim({}) or p.id == self.id]
        return min(healthy, default=self.id) == self.id

    async def _repair_registrations(self) -> None:
        assert self.repairs is not None
        orphans = list(self.peers.orphans.values())
        try:
            n = await self.repairs.registrations(orphans)
        except EtcdError as exc:
            self.log.warning("registration repair failed", error=str(exc))
            return
        if n:
            self.log.warning("deleted registrations without a lease", count=n)

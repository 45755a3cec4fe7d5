"""Repair the keys that would silence a job: fences nobody can poison (I7).

A key that no live session or plausible time stands behind is repaired by a
healthy worker, with a compare-and-swap on exactly the revision it saw, so a
repair never undoes a legitimate write that came after it. Every repair is
logged at warning and recorded under ``repairs/<kind>/<name>`` (the bad key,
its value, its writer where known, who repaired it and when); records expire
after ``KEEP`` seconds.

- **fence** — ``ticks/<job>`` more than the tolerance ahead of cluster time
  (a worker with a wrong clock, a forged write). It is moved back to the last
  value it held that was plausible (read from etcd's history); if history was
  compacted, to cluster time plus the tolerance, which no legitimate claim can
  have passed. Ticks after the repaired value run again; those before it that
  never ran get ``missed`` records from the next claim (``workers.accounting``).
- **lock** — ``lock/<job>`` with no lease (etcd deletes a leased key with its
  lease, so a lease-less lock has no session behind it and would stay for
  ever), or a lock on this worker's own lease for a run it does not have.
  Deleted.
- **worker** — a registration with no lease: it is no live worker's. Deleted.
"""

from __future__ import annotations

import json
import time

import structlog

from scheduler.clock import Clock
from scheduler.etcd.client import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    KeyValue,
    cmp_unchanged,
    op_delete,
    op_put,
)
from scheduler.keyspace import Keyspace, decode_tick, encode_tick

log = structlog.get_logger("etcron.repair")

KEEP = 7 * 86400
"""Seconds a repair record is kept."""

HISTORY_STEPS = 10
"""How many earlier versions of a poisoned fence are read to find a plausible one."""


def _text(value: bytes, limit: int = 200) -> str:
    return value[:limit].decode("utf-8", "backslashreplace")


class Repairs:
    def __init__(self, client: EtcdClient, ks: Keyspace, worker_id: str, clock: Clock) -> None:
        self.client = client
        self.clock = clock
        self.ks = ks
        self.worker_id = worker_id
        self.running: set[str] = set()
        """Keys (job names, lock keys) whose repair is in flight: one at a time each."""
        self._lease = 0
        self._lease_until = 0.0

    async def fence(self, job: str, kv: KeyValue, limit_ms: int) -> bool:
        """Move a fence beyond ``limit_ms`` (cluster time plus the tolerance) back."""
        value = await self._plausible(kv, limit_ms)
        if value is None:
            value = limit_ms
        res = await self.client.txn([cmp_unchanged(kv)], [op_put(kv.key, encode_tick(value))])
        if res.succeeded:
            await self._record("fence", job, kv, repaired_to=value)
        return res.succeeded

    async def _plausible(self, kv: KeyValue, limit_ms: int) -> int | None:
        """The newest earlier value of the fence at or below ``limit_ms``."""
        rev = kv.mod_revision - 1
        for _ in range(HISTORY_STEPS):
            if rev <= 0:
                return None
            try:
                kvs, _ = await self.client.get_prefix(kv.key, revision=rev, page=10)
            except EtcdCompacted:
                return None
            old = next((k for k in kvs if k.key == kv.key), None)
            if old is None:
                return None
            try:
                tick = decode_tick(old.value)
            except ValueError:
                return None
            if tick <= limit_ms:
                return tick
            rev = old.mod_revision - 1
        return None

    async def lock(self, job: str, kv: KeyValue, why: str) -> bool:
        """Delete a lock no live run stands behind (exactly the version seen)."""
        res = await self.client.txn([cmp_unchanged(kv)], [op_delete(kv.key)])
        if res.succeeded:
            await self._record("lock", job, kv, why=why)
        return res.succeeded

    async def registrations(self, kvs: list[KeyValue]) -> int:
        """Delete registrations that have no lease; return how many went."""
        n = 0
        for kv in kvs:
            if kv.lease:
                continue
            res = await self.client.txn([cmp_unchanged(kv)], [op_delete(kv.key)])
            if res.succeeded:
                n += 1
                await self._record("worker", kv.key.rpartition("/")[2], kv, why="no lease")
        return n

    async def _record(self, kind: str, name: str, kv: KeyValue, **extra: object) -> None:
        writer = None
        try:
            raw = json.loads(kv.value)
            if isinstance(raw, dict):
                writer = raw.get("worker") or raw.get("id")
        except ValueError:
            pass
        doc = {
            "kind": kind,
            "key": kv.key,
            "value": _text(kv.value),
            "writer": writer,
            "lease": kv.lease,
            "revision": kv.mod_revision,
            "by": self.worker_id,
            "at": round(self.clock.time(), 3),
            **extra,
        }
        log.warning(f"repaired a stale {kind} key", **{k: v for k, v in doc.items() if v})
        try:
            await self.client.put(
                self.ks.repair(kind, name), json.dumps(doc).encode(), lease=await self._keep()
            )
        except EtcdError as exc:
            log.warning("could not record a repair", key=kv.key, error=str(exc))

    async def _keep(self) -> int:
        """A lease that ends ``KEEP`` seconds from now (one per hour of repairs)."""
        now = time.monotonic()
        if now > self._lease_until:
            self._lease, _ = await self.client.grant(KEEP)
            self._lease_until = now + 3600
        return self._lease

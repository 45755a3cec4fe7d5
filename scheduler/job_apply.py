"""Apply: compare job specs with etcd (a :class:`Plan`), then write the changes.

Rules this module keeps (for :meth:`scheduler.store.JobStore.apply`):

- **apply** computes a :class:`Plan` against etcd, then writes every change
  guarded by the mod revision seen by the plan. A plan of at most
  :data:`BATCH` writes and :data:`BATCH_BYTES` bytes of specs is written in one
  transaction (all or nothing). Larger plans are written in batches of at most
  :data:`BATCH` writes (etcd's default ``--max-txn-ops`` is 128) and
  :data:`BATCH_BYTES` bytes (etcd's default ``--max-request-bytes`` is
  1.5 MiB): each batch is atomic, the whole apply is **not**; a conflict in
  batch *k* leaves batches before *k* written. Re-running the same apply
  converges.
- Each batch carries its own audit entry and versions
  (:class:`scheduler.changes.Journal`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from scheduler.changes import Edit, Record
from scheduler.clip import quote
from scheduler.etcd.client import cmp_mod, op_delete, op_get, op_put
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.store_errors import ConflictError

if TYPE_CHECKING:
    from scheduler.store import JobStore

log = structlog.get_logger("etcron.store")

BATCH = 40
"""Most job writes per transaction: each takes 3 operations with its version
(etcd's default ``--max-txn-ops`` is 128; see :mod:`scheduler.changes`)."""
BATCH_BYTES = 512 * 1024
"""Most bytes of specs per transaction, each written twice (job and version);
etcd refuses requests over 1.5 MiB by default."""

Action = Literal["create", "update", "unchanged", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    name: str
    mod_revision: int
    """The mod revision seen by the plan (0: absent); every write is guarded by it."""
    spec: JobSpec | None = None
    """The new spec (create/update/unchanged); None for delete."""
    old: JobSpec | None = None
    """The spec in etcd when the plan was made (None: absent or invalid)."""


@dataclass
class Plan:
    """What an apply does (or did): per job, create / update / unchanged / delete."""

    changes: list[Change] = field(default_factory=list)
    revision: int = 0
    """The etcd revision the plan was computed at."""
    invalid: list[tuple[str, str]] = field(default_factory=list)
    """Values in etcd that are not valid job specs (name, error)."""
    applied: bool = False
    dry_run: bool = False
    batches: int = 0
    """Transactions written (0 when nothing changed or dry run)."""

    def names(self, action: Action) -> list[str]:
        return [c.name for c in self.changes if c.action == action]

    @property
    def writes(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def summary(self) -> dict[str, Any]:
        return {
            "create": self.names("create"),
            "update": self.names("update"),
            "unchanged": self.names("unchanged"),
            "delete": self.names("delete"),
            "invalid_in_etcd": [{"name": n, "error": e} for n, e in self.invalid],
            "revision": self.revision,
            "applied": self.applied,
            "dry_run": self.dry_run,
            "batches": self.batches,
        }


async def plan_jobs(store: JobStore, specs: list[JobSpec], *, prune: bool) -> Plan:
    """Compare ``specs`` with etcd. Raises ValueError on duplicate names."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"job {quote(spec.name)} is defined more than once")
        seen.add(spec.name)
    kvs, rev = await store.job_kvs()
    current: dict[str, tuple[JobSpec | None, int]] = {}
    resign: set[str] = set()
    plan = Plan(revision=rev)
    for kv in kvs:
        name = Keyspace.tail(kv.key, store.ks.jobs)
        if store.needs_resign(kv):
            resign.add(name)
        try:
            current[name] = (store.parse_job(kv), kv.mod_revision)
        except ValueError as exc:
            current[name] = (None, kv.mod_revision)
            plan.invalid.append((name, str(exc)))
    for spec in sorted(specs, key=lambda s: s.name):
        old, mod = current.get(spec.name, (None, 0))
        if spec.name not in current:
            plan.changes.append(Change("create", spec.name, 0, spec))
        elif old == spec and spec.name not in resign:
            plan.changes.append(Change("unchanged", spec.name, mod, spec, old))
        else:
            plan.changes.append(Change("update", spec.name, mod, spec, old))
    if prune:
        for name in sorted(current.keys() - seen):
            old, mod = current[name]
            plan.changes.append(Change("delete", name, mod, None, old))
    return plan


async def apply_jobs(store: JobStore, specs: list[JobSpec], *, prune: bool, dry_run: bool) -> Plan:
    """Plan, then write the changes guarded by the plan's mod revisions.

    One transaction when there are at most :data:`BATCH` writes; otherwise
    batches of :data:`BATCH`, each atomic, the whole not (see the module doc).
    Raises :class:`ConflictError` naming the jobs whose revision moved; the
    failing batch writes nothing.
    """
    plan = await store.plan(specs, prune=prune)
    plan.dry_run = dry_run
    writes = plan.writes
    if dry_run or not writes:
        plan.applied = not dry_run
        return plan
    values = {c.name: store.encode_spec(c.spec) for c in writes if c.spec is not None}
    batches = split_batches(writes, values)
    # the next batch's record (version numbers: other jobs) is read while
    # this batch's transaction is in flight
    record = asyncio.ensure_future(_record_batch(store, batches[0]))
    try:
        for i, batch in enumerate(batches):
            rec = await record
            if i + 1 < len(batches):
                record = asyncio.ensure_future(_record_batch(store, batches[i + 1]))
            await _write_batch(store, batch, values, rec, done=plan.batches)
            plan.batches += 1
    finally:
        if not record.done():
            record.cancel()
            with contextlib.suppress(BaseException):
                await record
    plan.applied = True
    log.info(
        "applied jobs",
        create=len(plan.names("create")),
        update=len(plan.names("update")),
        delete=len(plan.names("delete")),
        batches=plan.batches,
    )
    return plan


async def _record_batch(store: JobStore, batch: list[Change]) -> Record:
    edits = [Edit(c.name, c.old, c.spec) for c in batch]
    return await store.journal.record(store.actor, "apply", edits)


async def _write_batch(
    store: JobStore, batch: list[Change], values: dict[str, bytes], rec: Record, *, done: int
) -> None:
    compares, ops, checks = [], [], []
    for c in batch:
        key = store.ks.job(c.name)
        compares.append(cmp_mod(key, c.mod_revision))
        checks.append(op_get(key))
        if c.action == "delete":
            ops.append(op_delete(key))
        else:
            ops.append(op_put(key, values[c.name]))
    res = await store.client.txn([*compares, *rec.compares], [*ops, *rec.ops], checks)
    if res.succeeded:
        return
    moved = []
    for c, seen in zip(batch, res.responses, strict=True):
        now = seen[0].mod_revision if seen else 0
        if now != c.mod_revision:
            moved.append(c.name)
    partial = f"; {done} earlier batch(es) were already written" if done else ""
    raise ConflictError(
        f"job(s) {', '.join(moved) or '?'} changed in etcd since the plan was made; "
        f"nothing in this batch was written{partial}. Run apply again.",
        moved,
    )


def split_batches(writes: list[Change], values: dict[str, bytes]) -> list[list[Change]]:
    """``writes`` in order, cut into runs of at most BATCH writes and BATCH_BYTES bytes
    (of the stored values, signed or not)."""
    out: list[list[Change]] = []
    size = 0
    for c in writes:
        n = len(values.get(c.name, b""))
        if not out or len(out[-1]) >= BATCH or size + n > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(c)
        size += n
    return out

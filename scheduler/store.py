"""The master's data access: jobs, plans, runs and requests in etcd.

Rules this module keeps:

- **Reads never crash on bad data.** A value under ``jobs/`` that is not a valid
  job spec (or whose ``name`` differs from its key) is reported by
  :meth:`JobStore.list_jobs` as ``(key name, error)`` and skipped; malformed run
  records and worker registrations are logged and skipped.
- **Writes are compare-and-swap on the key's mod revision** whenever the caller
  says what it saw: ``expect_mod_revision=0`` means "must not exist", ``N`` means
  "must still be at revision N". A mismatch raises :class:`ConflictError` and
  writes nothing.
- **read-modify-write** (:meth:`JobStore.update_job`, used by suspend/resume)
  re-reads and retries on conflict, so two concurrent edits both land.
- **apply** computes a :class:`Plan` against etcd, then writes every change
  guarded by the mod revision seen by the plan. A plan of at most
  :data:`BATCH` writes and :data:`BATCH_BYTES` bytes of specs is written in one
  transaction (all or nothing). Larger plans are written in batches of at most
  :data:`BATCH` writes (etcd's default ``--max-txn-ops`` is 128) and
  :data:`BATCH_BYTES` bytes (etcd's default ``--max-request-bytes`` is
  1.5 MiB): each batch is atomic, the whole apply is **not**; a conflict in
  batch *k* leaves batches before *k* written. Re-running the same apply
  converges.
- **Limits apply on write, reading tolerates older values**: specs are read
  with :meth:`JobSpec.from_json`, which does not apply the limits of
  :mod:`scheduler.limits` (spec size, lengths, NUL bytes, ``output_limit`` and
  duration caps), so a job written before a limit existed is listed, read,
  suspended and run as before; only a value the model itself rejects is
  reported as invalid (:class:`CorruptValue` for one job).
- **Every change is recorded in its own transaction**: an audit entry, and a
  new version per changed job (:class:`scheduler.changes.Journal`), by the
  store's :class:`~scheduler.audit.Actor` (:meth:`JobStore.acting_as`). So a
  write without CAS is a read and a CAS too, retried on conflict like
  :meth:`JobStore.update_job`. A write that changes nothing makes no version.
- Kill and manual-run requests are short-lived keys on their own lease
  (:data:`KILL_TTL`, :data:`TRIGGER_TTL` seconds), written only if the job exists.
- **A kill ends every running run**, also one whose worker is gone: a
  ``running`` record whose worker lease no longer exists gets its final record
  here (``killed``, message :data:`WORKER_GONE`), by :func:`end_orphaned_run`:
  a compare-and-swap on the record's mod revision (a worker's own late final
  record is never overwritten; one written after ours replaces it), and the
  job's lock deleted in the same transaction only if its create revision is the
  run's fencing token and its lease is dead too. Runs whose lease is alive are
  left to their worker, which sees the kill request.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import secrets
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from scheduler.audit import SYSTEM, Actor, Operation
from scheduler.changes import Edit, Journal, Record
from scheduler.clip import quote
from scheduler.clock import Clock
from scheduler.etcd.client import (
    GREATER,
    EtcdClient,
    KeyValue,
    cmp_created,
    cmp_mod,
    cmp_unchanged,
    op_delete,
    op_get,
    op_put,
)
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.registration import WorkerRegistration
from scheduler.run_requests import RunRequest, StopRequest
from scheduler.runs import RunRecord, RunStatus
from scheduler.signing import Signer, spec_bytes, unwrap
from scheduler.versions import DEFAULT_KEEP

log = structlog.get_logger("etcron.store")

BATCH = 40
"""Most job writes per transaction: each takes 3 operations with its version
(etcd's default ``--max-txn-ops`` is 128; see :mod:`scheduler.changes`)."""
BATCH_BYTES = 512 * 1024
"""Most bytes of specs per transaction, each written twice (job and version);
etcd refuses requests over 1.5 MiB by default."""
UPDATE_ATTEMPTS = 8
"""How many times :meth:`JobStore.update_job` re-reads after a conflict."""
KILL_TTL = 30
TRIGGER_TTL = 60
WORKER_GONE = "killed by request: worker gone (its lease no longer exists)"

Action = Literal["create", "update", "unchanged", "delete"]


class StoreError(Exception):
    """Base class of the errors this module raises on purpose."""


class ConflictError(StoreError):
    """A compare-and-swap failed: someone changed the job since it was read."""

    def __init__(self, message: str, jobs: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.jobs = list(jobs)


class JobNotFound(StoreError, LookupError):
    """The job does not exist in etcd."""

    def __init__(self, name: str) -> None:
        super().__init__(f"job {quote(name)} not found")
        self.name = name


class CorruptValue(StoreError, ValueError):
    """A value in etcd is not what it should be (reported, never fatal)."""


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


class JobStore:
    """Master-side access to the keyspace; every method is one or a few etcd calls."""

    def __init__(
        self,
        client: EtcdClient,
        keyspace: Keyspace,
        *,
        signer: Signer | None = None,
        keep_versions: int = DEFAULT_KEEP,
        actor: Actor = SYSTEM,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.clock = clock or Clock()
        """Stamps requests, records and audit entries (``Clock()``: the wall clock)."""
        self.ks = keyspace
        self.signer = signer
        """Signs every spec written (``master.signing_key_file``); None: specs are stored bare."""
        self.journal = Journal(client, keyspace, keep_versions=keep_versions, clock=self.clock)
        self.actor = actor

    def acting_as(self, actor: Actor) -> JobStore:
        """This store, recording its changes as made by ``actor``."""
        twin = copy.copy(self)
        twin.actor = actor
        return twin

    def _encode(self, spec: JobSpec) -> bytes:
        """The value stored for ``spec``: signed (:mod:`scheduler.signing`) when there is a key."""
        raw = spec.to_json()
        return raw if self.signer is None else self.signer.seal(raw)

    def _resign_needed(self, kv: KeyValue) -> bool:
        """Is this stored value not signed by the current key (an apply writes it again)?"""
        if self.signer is None:
            return False
        try:
            return unwrap(kv.value).key_id != self.signer.key_id
        except ValueError:
            return True

    # jobs -------------------------------------------------------------------

    def _parse_job(self, kv: KeyValue) -> JobSpec:
        name = Keyspace.tail(kv.key, self.ks.jobs)
        spec = JobSpec.from_json(spec_bytes(kv.value))  # ValueError when malformed
        if spec.name != name:
            raise ValueError(f"spec name {quote(spec.name)} does not match its key {quote(name)}")
        return spec

    async def _job_kvs(self) -> tuple[list[KeyValue], int]:
        return await self.client.get_prefix(self.ks.jobs)

    async def list_jobs(self) -> tuple[list[JobSpec], list[tuple[str, str]], int]:
        """(valid jobs sorted by name, (name, error) for invalid values, revision)."""
        kvs, rev = await self._job_kvs()
        jobs: list[JobSpec] = []
        bad: list[tuple[str, str]] = []
        for kv in kvs:
            try:
                jobs.append(self._parse_job(kv))
            except ValueError as exc:
                name = Keyspace.tail(kv.key, self.ks.jobs)
                log.warning("invalid job value in etcd", job=name, error=str(exc))
                bad.append((name, str(exc)))
        jobs.sort(key=lambda j: j.name)
        return jobs, bad, rev

    async def get_job(self, name: str) -> tuple[JobSpec, int] | None:
        """The spec and its mod revision, or None. Raises CorruptValue for a bad value."""
        kv, _ = await self.client.get(self.ks.job(name))
        if kv is None:
            return None
        try:
            return self._parse_job(kv), kv.mod_revision
        except ValueError as exc:
            raise CorruptValue(f"job {quote(name)} in etcd is invalid: {exc}") from exc

    async def put_job(
        self,
        spec: JobSpec,
        *,
        expect_mod_revision: int | None = None,
        operation: Operation = "put",
        restored: int | None = None,
    ) -> int:
        """Write a job; returns the new mod revision. CAS when ``expect_mod_revision`` is set."""
        rev, _ = await self._write(spec.name, spec, expect_mod_revision, operation, restored)
        return rev

    async def delete_job(self, name: str, *, expect_mod_revision: int | None = None) -> bool:
        """Delete a job; False when it did not exist. CAS when ``expect_mod_revision`` is set."""
        _, existed = await self._write(name, None, expect_mod_revision, "delete", None)
        return existed

    async def _write(
        self,
        name: str,
        new: JobSpec | None,
        expect: int | None,
        operation: Operation,
        restored: int | None,
    ) -> tuple[int, bool]:
        """Put (``new``) or delete one job with its record, guarded by the mod
        revision read (``expect`` if given: a mismatch is a ConflictError at once).
        (revision, whether the job existed before)."""
        key = self.ks.job(name)
        for _ in range(UPDATE_ATTEMPTS):
            kv, _ = await self.client.get(key)
            mod = kv.mod_revision if kv is not None else 0
            if expect is not None and mod != expect:
                raise ConflictError(_conflict_text(name, expect, [kv] if kv else []), [name])
            if kv is None and new is None:
                return 0, False
            before = self.spec_of(kv)
            rec = await self.journal.record(
                self.actor, operation, [Edit(name, before, new)], restored=restored
            )
            op = op_delete(key) if new is None else op_put(key, self._encode(new))
            res = await self.client.txn(
                [cmp_mod(key, mod), *rec.compares], [op, *rec.ops], [op_get(key)]
            )
            if res.succeeded:
                return res.revision, kv is not None
        raise ConflictError(
            f"job {quote(name)} changed concurrently {UPDATE_ATTEMPTS} times; try again", [name]
        )

    def spec_of(self, kv: KeyValue | None) -> JobSpec | None:
        try:
            return None if kv is None else self._parse_job(kv)
        except ValueError:
            return None

    async def update_job(
        self, name: str, fn: Callable[[JobSpec], JobSpec], *, operation: Operation = "put"
    ) -> JobSpec:
        """Read, apply ``fn``, write back guarded by the mod revision read; retry on conflict.

        ``fn`` may be called several times and must be pure. Its result must keep
        the job's name. Unchanged results are not written.
        """
        for _ in range(UPDATE_ATTEMPTS):
            found = await self.get_job(name)
            if found is None:
                raise JobNotFound(name)
            spec, mod = found
            new = fn(spec)
            if new.name != name:
                raise ValueError(f"an update may not rename job {quote(name)} to {quote(new.name)}")
            if new == spec:
                return spec
            try:
                await self.put_job(new, expect_mod_revision=mod, operation=operation)
            except ConflictError:
                continue
            return new
        raise ConflictError(
            f"job {quote(name)} changed concurrently {UPDATE_ATTEMPTS} times; try again", [name]
        )

    # plan & apply -------------------------------------------------------------

    async def plan(self, specs: list[JobSpec], *, prune: bool) -> Plan:
        """Compare ``specs`` with etcd. Raises ValueError on duplicate names."""
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise ValueError(f"job {quote(spec.name)} is defined more than once")
            seen.add(spec.name)
        kvs, rev = await self._job_kvs()
        current: dict[str, tuple[JobSpec | None, int]] = {}
        resign: set[str] = set()
        plan = Plan(revision=rev)
        for kv in kvs:
            name = Keyspace.tail(kv.key, self.ks.jobs)
            if self._resign_needed(kv):
                resign.add(name)
            try:
                current[name] = (self._parse_job(kv), kv.mod_revision)
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

    async def apply(self, specs: list[JobSpec], *, prune: bool, dry_run: bool) -> Plan:
        """Plan, then write the changes guarded by the plan's mod revisions.

        One transaction when there are at most :data:`BATCH` writes; otherwise
        batches of :data:`BATCH`, each atomic, the whole not (see the module doc).
        Raises :class:`ConflictError` naming the jobs whose revision moved; the
        failing batch writes nothing.
        """
        plan = await self.plan(specs, prune=prune)
        plan.dry_run = dry_run
        writes = plan.writes
        if dry_run or not writes:
            plan.applied = not dry_run
            return plan
        values = {c.name: self._encode(c.spec) for c in writes if c.spec is not None}
        batches = _batches(writes, values)
        # the next batch's record (version numbers: other jobs) is read while
        # this batch's transaction is in flight
        record = asyncio.ensure_future(self._record_batch(batches[0]))
        try:
            for i, batch in enumerate(batches):
                rec = await record
                if i + 1 < len(batches):
                    record = asyncio.ensure_future(self._record_batch(batches[i + 1]))
                await self._write_batch(batch, values, rec, done=plan.batches)
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

    async def _record_batch(self, batch: list[Change]) -> Record:
        edits = [Edit(c.name, c.old, c.spec) for c in batch]
        return await self.journal.record(self.actor, "apply", edits)

    async def _write_batch(
        self, batch: list[Change], values: dict[str, bytes], rec: Record, *, done: int
    ) -> None:
        compares, ops, checks = [], [], []
        for c in batch:
            key = self.ks.job(c.name)
            compares.append(cmp_mod(key, c.mod_revision))
            checks.append(op_get(key))
            if c.action == "delete":
                ops.append(op_delete(key))
            else:
                ops.append(op_put(key, values[c.name]))
        res = await self.client.txn([*compares, *rec.compares], [*ops, *rec.ops], checks)
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

    # runs ---------------------------------------------------------------------

    async def list_runs(self, job: str, limit: int = 20) -> list[RunRecord]:
        """The newest ``limit`` run records of ``job`` (run ids sort by tick)."""
        kvs, _ = await self.client.get_prefix(self.ks.job_runs(job))
        out: list[RunRecord] = []
        for kv in sorted(kvs, key=lambda k: k.key, reverse=True):
            if len(out) >= limit:
                break
            try:
                out.append(RunRecord.from_json(kv.value))
            except ValueError as exc:
                log.warning("invalid run record in etcd", key=kv.key, error=str(exc))
        return out

    async def get_run(self, job: str, run_id: str) -> RunRecord | None:
        kv, _ = await self.client.get(self.ks.run(job, run_id))
        if kv is None:
            return None
        try:
            return RunRecord.from_json(kv.value)
        except ValueError as exc:
            raise CorruptValue(f"run {job}/{run_id} in etcd is invalid: {exc}") from exc

    # requests -----------------------------------------------------------------

    async def _put_if_job(
        self, job: str, key: str, value: bytes, ttl: int, operation: Operation, detail: str
    ) -> None:
        lease, _ = await self.client.grant(ttl)
        job_key = self.ks.job(job)
        rec = await self.journal.record(self.actor, operation, [], jobs=[job], detail=detail)
        res = await self.client.txn(
            [cmp_created(job_key, 0, GREATER)],
            [op_put(key, value, lease), *rec.ops],
        )
        if not res.succeeded:
            await self.client.revoke(lease)
            raise JobNotFound(job)

    async def request_kill(self, job: str) -> list[str]:
        """Stop every running run of ``job``; the run ids ended here.

        Live workers are asked through ``killer/<job>`` (the key lives KILL_TTL s)
        and record their runs themselves. A ``running`` record whose worker lease
        is dead has nobody left to end it: it is ended here as ``killed``
        (see :func:`end_orphaned_run`) and its run id returned.
        """
        await self._put_if_job(
            job,
            self.ks.killer(job),
            StopRequest.kill(self.clock.now()).encode(),
            KILL_TTL,
            "kill",
            "kill requested",
        )
        return await self.end_orphaned_runs(job, RunStatus.KILLED, WORKER_GONE)

    async def end_orphaned_runs(self, job: str, status: RunStatus, message: str) -> list[str]:
        """End the ``running`` records of ``job`` whose worker lease is dead; their run ids."""
        kvs, _ = await self.client.get_prefix(self.ks.job_runs(job))
        alive: dict[int, bool] = {}
        ended: list[str] = []
        for kv in kvs:
            try:
                rec = RunRecord.from_json(kv.value)
            except ValueError:
                continue  # reported by list_runs; nothing to end
            if rec.status is not RunStatus.RUNNING or not rec.lease:
                continue
            if rec.lease not in alive:
                alive[rec.lease] = await self.client.lease_ttl(rec.lease) > 0
            if alive[rec.lease]:
                continue
            if await end_orphaned_run(
                self.client, self.ks, kv, rec, status, message, self.clock.now(), alive
            ):
                ended.append(rec.run_id)
        if ended:
            log.warning("ended runs whose worker is gone", job=job, runs=ended, status=str(status))
        return ended

    async def request_run(self, job: str) -> str:
        """Ask for one manual run of ``job`` now; returns the request id."""
        now = self.clock.now()
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        request_id = f"{stamp}-{secrets.token_hex(4)}"
        value = RunRequest(request_id=request_id, requested_at=now).encode()
        key = self.ks.trigger(job, request_id)
        await self._put_if_job(job, key, value, TRIGGER_TTL, "run", f"request {request_id}")
        return request_id

    # workers ------------------------------------------------------------------

    async def list_workers(self) -> list[dict[str, Any]]:
        """Live worker registrations, sorted by id, each with a ``skew`` in seconds.

        ``skew`` is the value the worker reports itself (its clock minus the
        median of its peers' clocks, measured as their registrations arrive),
        when present. Otherwise it is estimated here as the worker's published
        ``clock`` minus the median published clock; registrations are refreshed
        every few seconds, so that fallback is only accurate to that interval.
        """
        kvs, _ = await self.client.get_prefix(self.ks.workers)
        workers: list[dict[str, Any]] = []
        for kv in kvs:
            if not kv.lease:
                continue  # no live session stands behind it: stale or forged, not a worker
            reg = WorkerRegistration.parse(kv.value, worker_id=self.ks.parse_worker(kv.key))
            if reg is None:
                log.warning("invalid worker registration", key=kv.key)
                continue
            workers.append(reg.shown())
        clocks = [float(w["clock"]) for w in workers if _is_number(w.get("clock"))]
        median = statistics.median(clocks) if clocks else None
        for w in workers:
            if _is_number(w.get("skew")):
                w["skew"] = float(w["skew"])
            elif median is not None and _is_number(w.get("clock")):
                w["skew"] = round(float(w["clock"]) - median, 4)
            else:
                w["skew"] = None
        workers.sort(key=lambda w: str(w["id"]))
        return workers

    async def revision(self) -> int:
        return await self.client.revision()


async def end_orphaned_run(
    client: EtcdClient,
    ks: Keyspace,
    kv: KeyValue,
    rec: RunRecord,
    status: RunStatus,
    message: str,
    now: datetime,
    alive: dict[int, bool] | None = None,
) -> bool:
    """Write the final record of a ``running`` run whose worker lease is dead.

    The caller has checked that ``rec.lease`` is dead. One transaction, guarded
    by the record's mod revision (``kv``): the final record, and the job's lock
    (``lock/J``, or ``lock/J/<run>`` for ``allow``) deleted only if its mod
    revision is the run's fencing token (the revision of the claim or hand-over
    that wrote it, which is also the record's create revision) and its lease is
    dead. Returns True when this call
    wrote the record; False when the record changed meanwhile (its worker, or
    another master, wrote it first).
    """
    alive = {} if alive is None else alive
    alive.setdefault(rec.lease, False)
    token = rec.fencing_token or kv.create_revision
    final = RunRecord.lost(rec, end=now, message=message, status=status)
    for _ in range(3):
        compares = [cmp_unchanged(kv)]
        ops = [op_put(kv.key, final.to_json())]
        for lock_key in (ks.lock(rec.job), ks.run_lock(rec.job, rec.run_id)):
            lock, _ = await client.get(lock_key)
            if lock is None or lock.mod_revision != token:
                continue  # gone with its lease, or another run's: not ours to touch
            if lock.lease and lock.lease not in alive:
                alive[lock.lease] = await client.lease_ttl(lock.lease) > 0
            if lock.lease and alive[lock.lease]:
                continue
            compares.append(cmp_mod(lock_key, token))
            ops.append(op_delete(lock_key))
        res = await client.txn(compares, ops)
        if res.succeeded:
            return True
        now_kv, _ = await client.get(kv.key)
        if now_kv is None or now_kv.mod_revision != kv.mod_revision:
            return False  # the record moved: whoever wrote it decided
        # only a lock moved (it went with its lease): decide again without it
    return False


def _batches(writes: list[Change], values: dict[str, bytes]) -> list[list[Change]]:
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


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _conflict_text(name: str, expected: int, seen: list[KeyValue]) -> str:
    if expected == 0:
        return (
            f"job {quote(name)} already exists (mod revision {seen[0].mod_revision if seen else 0})"
        )
    if not seen:
        return f"job {quote(name)} was deleted (expected mod revision {expected})"
    return f"job {quote(name)} is at mod revision {seen[0].mod_revision}, not {expected}"

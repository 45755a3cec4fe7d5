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
- **apply** (:mod:`scheduler.job_apply`) computes a :class:`Plan` against
  etcd, then writes every change guarded by the mod revision the plan saw, in
  atomic batches.
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
- Kill and manual-run requests, and the final record of a run whose worker
  is gone, are :mod:`scheduler.run_control`; live workers are
  :mod:`scheduler.live_workers`. The errors are :mod:`scheduler.store_errors`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import structlog

from scheduler import run_control
from scheduler.audit import SYSTEM, Actor, Operation
from scheduler.changes import Edit, Journal
from scheduler.clip import quote
from scheduler.clock import Clock
from scheduler.etcd.client import (
    EtcdClient,
    KeyValue,
    cmp_mod,
    op_delete,
    op_get,
    op_put,
)
from scheduler.job_apply import Plan, apply_jobs, plan_jobs
from scheduler.keyspace import Keyspace
from scheduler.live_workers import list_workers
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from scheduler.signing import Signer, spec_bytes, unwrap
from scheduler.store_errors import ConflictError, CorruptValue, JobNotFound, StoreError
from scheduler.versions import DEFAULT_KEEP

__all__ = ["ConflictError", "CorruptValue", "JobNotFound", "JobStore", "StoreError"]

log = structlog.get_logger("etcron.store")

UPDATE_ATTEMPTS = 8
"""How many times :meth:`JobStore.update_job` re-reads after a conflict."""


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

    def encode_spec(self, spec: JobSpec) -> bytes:
        """The value stored for ``spec``: signed (:mod:`scheduler.signing`) when there is a key."""
        raw = spec.to_json()
        return raw if self.signer is None else self.signer.seal(raw)

    def needs_resign(self, kv: KeyValue) -> bool:
        """Is this stored value not signed by the current key (an apply writes it again)?"""
        if self.signer is None:
            return False
        try:
            return unwrap(kv.value).key_id != self.signer.key_id
        except ValueError:
            return True

    # jobs -------------------------------------------------------------------

    def parse_job(self, kv: KeyValue) -> JobSpec:
        name = Keyspace.tail(kv.key, self.ks.jobs)
        spec = JobSpec.from_json(spec_bytes(kv.value))  # ValueError when malformed
        if spec.name != name:
            raise ValueError(f"spec name {quote(spec.name)} does not match its key {quote(name)}")
        return spec

    async def job_kvs(self) -> tuple[list[KeyValue], int]:
        return await self.client.get_prefix(self.ks.jobs)

    async def list_jobs(self) -> tuple[list[JobSpec], list[tuple[str, str]], int]:
        """(valid jobs sorted by name, (name, error) for invalid values, revision)."""
        kvs, rev = await self.job_kvs()
        jobs: list[JobSpec] = []
        bad: list[tuple[str, str]] = []
        for kv in kvs:
            try:
                jobs.append(self.parse_job(kv))
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
            return self.parse_job(kv), kv.mod_revision
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
            op = op_delete(key) if new is None else op_put(key, self.encode_spec(new))
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
            return None if kv is None else self.parse_job(kv)
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

    # plan & apply (scheduler.job_apply) ---------------------------------------

    async def plan(self, specs: list[JobSpec], *, prune: bool) -> Plan:
        """Compare ``specs`` with etcd. Raises ValueError on duplicate names."""
        return await plan_jobs(self, specs, prune=prune)

    async def apply(self, specs: list[JobSpec], *, prune: bool, dry_run: bool) -> Plan:
        """Plan, then write the changes guarded by the plan's mod revisions
        (batches: :mod:`scheduler.job_apply`). Raises :class:`ConflictError`."""
        return await apply_jobs(self, specs, prune=prune, dry_run=dry_run)

    # requests (scheduler.run_control) -----------------------------------------

    async def request_kill(self, job: str) -> list[str]:
        """Stop every running run of ``job``; the run ids ended here (the workers gone)."""
        return await run_control.request_kill(self, job)

    async def end_orphaned_runs(self, job: str, status: RunStatus, message: str) -> list[str]:
        """End the ``running`` records of ``job`` whose worker lease is dead; their run ids."""
        return await run_control.end_orphaned_runs(self, job, status, message)

    async def request_run(self, job: str) -> str:
        """Ask for one manual run of ``job`` now; returns the request id."""
        return await run_control.request_run(self, job)

    # workers (scheduler.live_workers) -----------------------------------------

    async def list_workers(self) -> list[dict[str, Any]]:
        """Live worker registrations, sorted by id, each with a ``skew`` in seconds
        (see :func:`scheduler.live_workers.list_workers`)."""
        return await list_workers(self.client, self.ks)

    async def revision(self) -> int:
        return await self.client.revision()


def _conflict_text(name: str, expected: int, seen: list[KeyValue]) -> str:
    if expected == 0:
        return (
            f"job {quote(name)} already exists (mod revision {seen[0].mod_revision if seen else 0})"
        )
    if not seen:
        return f"job {quote(name)} was deleted (expected mod revision {expected})"
    return f"job {quote(name)} is at mod revision {seen[0].mod_revision}, not {expected}"

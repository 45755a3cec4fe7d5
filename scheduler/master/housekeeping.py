"""Leader-elected housekeeping: retention, lost runs, compaction.

Any number of masters run; one at a time is the *leader*
(:class:`scheduler.etcd.election.Election` on ``<prefix>/leader``, held on the
master's session lease; the others wait for the key to vanish). Only the
leader sweeps:

- **Lost runs.** A record still ``running`` whose worker lease is gone (etcd
  says the lease does not exist) is rewritten as ``lost``, guarded by its mod
  revision so a worker's late final record is never overwritten; a lock still
  created at the run's fencing token on a dead lease goes in the same
  transaction (``scheduler.run_control.end_orphaned_run``, shared with ``kill``).
- **Retention.** Per job keep the newest ``keep_succeeded`` successful and
  ``keep_failed`` other final runs (job fields, else the master config), and
  none older than ``keep_for``. Records of deleted jobs go after ``keep_for``.
  A run's record and its output are deleted together, in transactions of at
  most ``BATCH`` operations (etcd's default limit is 128).
- **Audit retention** (:func:`scheduler.audit.trim`): entries older than
  ``audit_keep_for`` and the oldest beyond ``audit_max_entries`` go.
- **Compaction.** Every ``compact_interval`` the leader compacts history older
  than ``compact_keep_revisions`` revisions, so the database stops growing.
- **Space** (``scheduler.master.space``): run output within
  ``output_budget_bytes``; the database size and alarms watched; a NOSPACE
  alarm recovered from (free, compact, defragment, disarm).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from scheduler.audit import trim as trim_audit
from scheduler.clock import Clock
from scheduler.config import MasterConfig
from scheduler.etcd.client import (
    EtcdClient,
    EtcdError,
    EtcdNoSpace,
    KeyValue,
    cmp_absent,
    op_delete,
)
from scheduler.etcd.election import Election
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace
from scheduler.master.space import SpaceKeeper
from scheduler.model import JobSpec
from scheduler.run_control import end_orphaned_run
from scheduler.runs import RunRecord, RunStatus
from scheduler.signing import spec_bytes

log = structlog.get_logger("etcron.housekeeping")

BATCH = 100


@dataclass
class SweepReport:
    runs_seen: int = 0
    deleted: int = 0
    marked_lost: int = 0
    malformed: int = 0
    output_dropped: int = 0
    taken_cleaned: int = 0


class Housekeeper:
    def __init__(
        self,
        client: EtcdClient,
        ks: Keyspace,
        config: MasterConfig,
        *,
        identity: str,
        clock: Clock | None = None,
        on_sweep: Callable[[SweepReport | None, float], None] | None = None,
    ) -> None:
        self.client = client
        self.ks = ks
        self.config = config
        self.identity = identity
        self.clock = clock or Clock()
        self.election = Election(
            client, ks.leader, identity, retry=min(2.0, config.housekeeping_interval)
        )
        self.is_leader = self.election.is_leader
        """Set while this master leads (:attr:`Election.is_leader`)."""
        self._last_compact = 0.0
        self.space = SpaceKeeper(client, ks, config)
        self.on_sweep = on_sweep
        """Told (report, seconds) after each sweep, (None, seconds) when one failed."""

    async def run(self) -> None:
        """Campaign, and sweep while leader; forever (cancel to stop)."""
        while True:
            try:
                session = await Session(self.client, ttl=10, margin=2).start()
            except EtcdError as exc:
                log.warning("housekeeping: no session", error=str(exc))
                await asyncio.sleep(2)
                continue
            try:
                await self._lead(session)
            except EtcdError as exc:
                log.warning("housekeeping: etcd error", error=str(exc))
                await asyncio.sleep(1)
            finally:
                await self.election.resign()
                await session.close()

    async def _lead(self, session: Session) -> None:
        if not await self.election.campaign(session):
            return
        log.info("housekeeping: leader", master=self.identity)
        while not session.lost.is_set():
            await self.tend()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.housekeeping_interval):
                    await session.lost.wait()

    async def tend(self) -> None:
        """One round of the leader's work: space first (a full etcd refuses the
        sweep's writes), then the sweep and compaction."""
        space = await self.space.check()
        full = "NOSPACE" in space.alarms
        await self._sweep_told(full=full)
        await trim_audit(
            self.client,
            self.ks,
            keep_for=self.config.audit_keep_for,
            max_entries=self.config.audit_max_entries,
            at=self.clock.now(),
        )
        if full and self.config.recover_nospace:
            await self.space.recover()
        elif not full:
            await self.maybe_compact()
        await self.space.tell_workers()

    async def _sweep_told(self, *, full: bool) -> None:
        started = self.clock.monotonic()
        try:
            report = await self.sweep(full=full)
        except EtcdError:
            if self.on_sweep is not None:
                self.on_sweep(None, self.clock.monotonic() - started)
            raise
        if self.on_sweep is not None:
            self.on_sweep(report, self.clock.monotonic() - started)

    async def maybe_compact(self) -> int | None:
        now = self.clock.monotonic()
        if self._last_compact and now - self._last_compact < self.config.compact_interval:
            return None
        self._last_compact = now
        rev = await self.client.revision()
        target = rev - self.config.compact_keep_revisions
        if target <= 0:
            return None
        await self.client.compact(target)
        log.info("compacted etcd history", revision=target)
        return target

    async def sweep(self, *, full: bool = False) -> SweepReport:
        """Retention, the output budget and lost runs. ``full`` (a NOSPACE alarm):
        only deletes, which etcd still accepts, and a tighter output budget."""
        report = SweepReport()
        kvs, _ = await self.client.get_prefix(self.ks.runs)
        jobs = await self._jobs()
        by_job: dict[str, list[tuple[RunRecord, KeyValue]]] = defaultdict(list)
        for kv in kvs:
            try:
                job, _ = self.ks.parse_run(kv.key)
                by_job[job].append((RunRecord.from_json(kv.value), kv))
            except ValueError:
                report.malformed += 1
        deletes: list[tuple[str, str]] = []
        for job, runs in by_job.items():
            report.runs_seen += len(runs)
            if not full:
                try:
                    report.marked_lost += await self._mark_lost(runs)
                except EtcdNoSpace:
                    full = True
            deletes.extend((job, r.run_id) for r in self._expired(jobs.get(job), runs))
        gone = set(deletes)
        kept = [
            (r, kv) for job, runs in by_job.items() for r, kv in runs if (job, r.run_id) not in gone
        ]
        for i in range(0, len(deletes), BATCH // 2):
            ops = []
            for job, run_id in deletes[i : i + BATCH // 2]:
                ops += [
                    op_delete(self.ks.run(job, run_id)),
                    op_delete(self.ks.run_output(job, run_id), prefix=True),
                ]
            await self.client.txn([], ops)
        report.deleted = len(deletes)
        report.output_dropped = await self.space.drop_output(kept, pressed=full)
        report.taken_cleaned = await self._clean_taken()
        if report.deleted or report.marked_lost or report.output_dropped or report.taken_cleaned:
            log.info("housekeeping sweep", **report.__dict__)
        return report

    async def _clean_taken(self, most: int = 500) -> int:
        """Delete ``taken/J/R`` keys whose manual-run request ``trigger/J/R`` is gone.

        Safe at any time: a claim needs its request to exist, so no claim can use
        a request whose ``taken`` key is deleted here (the compare is in the delete)."""
        taken, _ = await self.client.get_prefix(self.ks.taken_requests)
        cleaned = 0
        for kv in taken[:most]:
            try:
                job, request = self.ks.parse_taken(kv.key)
            except ValueError:
                continue  # not written by a claim: not ours to clean
            trigger = self.ks.trigger(job, request)
            res = await self.client.txn([cmp_absent(trigger)], [op_delete(kv.key)])
            cleaned += int(res.succeeded)
        return cleaned

    async def _jobs(self) -> dict[str, JobSpec]:
        kvs, _ = await self.client.get_prefix(self.ks.jobs)
        out = {}
        for kv in kvs:
            with contextlib.suppress(ValueError):
                spec = JobSpec.from_json(spec_bytes(kv.value))
                out[spec.name] = spec
        return out

    async def _mark_lost(self, runs: list[tuple[RunRecord, KeyValue]]) -> int:
        marked = 0
        leases: dict[int, bool] = {}
        for rec, kv in runs:
            if rec.status is not RunStatus.RUNNING or not rec.lease:
                continue
            if rec.lease not in leases:
                leases[rec.lease] = await self.client.lease_ttl(rec.lease) > 0
            if leases[rec.lease]:
                continue
            marked += await end_orphaned_run(
                self.client,
                self.ks,
                kv,
                rec,
                RunStatus.LOST,
                "the worker's lease ended while the run was active",
                self.clock.now(),
                leases,
            )
        return marked

    def _expired(
        self, job: JobSpec | None, runs: list[tuple[RunRecord, KeyValue]]
    ) -> list[RunRecord]:
        cfg = self.config
        keep_ok = (
            job.keep_succeeded if job and job.keep_succeeded is not None else cfg.keep_succeeded
        )
        keep_bad = job.keep_failed if job and job.keep_failed is not None else cfg.keep_failed
        keep_for = job.keep_for if job and job.keep_for is not None else cfg.keep_for
        horizon = self.clock.now() - timedelta(seconds=keep_for)
        final = sorted((r for r, _ in runs if r.status.final), key=lambda r: r.run_id, reverse=True)
        ok = [r for r in final if r.status.ok]
        bad = [r for r in final if not r.status.ok]
        doomed = ok[keep_ok:] + bad[keep_bad:]
        doomed += [r for r in ok[:keep_ok] + bad[:keep_bad] if _ended(r) < horizon]
        if job is None:  # a deleted job: nothing is kept past keep_for
            doomed = [r for r in final if _ended(r) < horizon]
        return doomed


def _ended(rec: RunRecord) -> datetime:
    return rec.end or rec.start or rec.tick or datetime.min.replace(tzinfo=UTC)

"""Ticks that did not run get a record: missed by this worker's claim path, ticks
a fence write jumped over, and ticks of a job no live worker may run.

- ``record(job, tick, why)`` writes a ``missed`` record with the tick fence
  alone, no lock (``ClaimRequest.record_only``): of all workers that give up
  on a tick, exactly one records it.
- ``account(job, result, tick)`` records the ticks between the fence value a
  claim replaced and its own tick (``workers.accounting``).
- ``nobody_eligible_later(job, tick)``: when no live worker matches the job's
  selector, one worker (``Eligibility.nobody_eligible``) records the tick once
  every eligible worker would have had its turn.

The messages are the ``reason`` label of ``etcron_missed_ticks_total``
(``workers.metrics.missed_reason``).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.claim_txn import Claim, ClaimRequest, Handed, Outcome, TickFence, claim
from scheduler.etcd.client import EtcdClient, EtcdUnavailable
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, from_ms, tick_ms
from workers.accounting import UNCLAIMED, record_gap
from workers.cluster_time import ClusterClock
from workers.eligibility import Eligibility
from workers.metrics import WorkerMetrics
from workers.state import JobTable, TickView
from workers.tasks import Tasks

DEADLINE = "no worker could start this tick within its starting deadline"
AT_CAPACITY = "every eligible worker was at capacity"
NO_ELIGIBLE = "no eligible worker"
NO_ELIGIBLE_GRACE = 1.5
"""Seconds after a tick before it is recorded missed for want of an eligible worker."""

MIN_PERIOD_MS = 1000
"""No schedule fires twice within a second (cron has whole seconds, ``@every`` >= 1 s)."""


class MissedTicks:
    def __init__(
        self,
        client: EtcdClient,
        batcher: TxnBatcher,
        ks: Keyspace,
        worker_id: str,
        *,
        clock: ClusterClock,
        table: JobTable,
        ticks: TickView,
        eligibility: Eligibility,
        tasks: Tasks,
        metrics: WorkerMetrics,
        stats: dict[str, int],
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.client = client
        self.batcher = batcher
        self.ks = ks
        self.id = worker_id
        self.clock = clock
        self.table = table
        self.ticks = ticks
        self.eligibility = eligibility
        self.tasks = tasks
        self.metrics = metrics
        self.stats = stats
        self.stopping = stopping
        self.log = log
        self._warned: dict[str, float] = {}

    async def record(
        self, job: JobSpec, fire_ms: int, why: str = DEADLINE, *, quiet: bool = False
    ) -> None:
        tick = from_ms(fire_ms)
        rec = RunRecord.missed(job.name, tick, why, worker=self.id)
        req = ClaimRequest.record_only(
            TickFence(self.ks.tick(job.name), fire_ms),
            run_id=rec.run_id,
            record_key=self.ks.run(job.name, rec.run_id),
            record_value=rec.to_json(),
        )
        with contextlib.suppress(EtcdUnavailable):
            c = await claim(self.batcher, req)
            if c.outcome is Outcome.WON:
                self.stats["missed"] += 1
                self.metrics.missed(job.name, why)
                if not quiet:
                    self.log.warning("tick missed", job=job.name, tick=str(tick), reason=why)
                self.account(job, c, fire_ms)

    def account(self, job: JobSpec, result: Claim | Handed, fire_ms: int) -> None:
        """Record the ticks our fence write jumped over (``workers.accounting``)."""
        prev = result.replaced
        if prev is None or fire_ms - prev <= MIN_PERIOD_MS:
            return  # no tick fits between two ticks a second apart (the shortest period)
        if not self.clock.known:
            return
        if self.table.revisions.get(job.name, 0) > result.replaced_revision:
            return  # the schedule changed since: the gap is not the new schedule's
        first = tick_ms(job.schedule_obj().next_after(from_ms(prev), job.zone()))
        if first < fire_ms:
            self.tasks.background(self._record_gap(job, prev, fire_ms))

    async def _record_gap(self, job: JobSpec, prev: int, fire_ms: int) -> None:
        n = await record_gap(self.client, self.ks, job, prev, fire_ms, self.id, self.clock.now())
        self.stats["missed"] += n
        self.metrics.missed(job.name, UNCLAIMED, n)

    def nobody_eligible_later(self, job: JobSpec, fire_ms: int) -> None:
        """If no live worker may run ``job`` and I am the one to say so, record the
        tick after every eligible worker would have had its turn (one may just
        have joined)."""
        if self.eligibility.nobody_eligible(job, fire_ms):
            at = fire_ms / 1000 + NO_ELIGIBLE_GRACE
            self.clock.call_at(at, self._no_eligible, job.name, fire_ms)

    def _no_eligible(self, name: str, fire_ms: int) -> None:
        job = self.table.jobs.get(name)
        if job is None or self.stopping.is_set() or self.ticks.taken(name, fire_ms):
            return
        if not self.eligibility.nobody_eligible(job, fire_ms):
            return
        labels = ", ".join(f"{k}={v}" for k, v in sorted(job.selector.items()))
        why = f"{NO_ELIGIBLE}: no live worker has the labels of its selector ({labels})"
        now = self.clock.monotonic()
        quiet = now - self._warned.get(name, -3600.0) < 60
        if not quiet:  # one line a minute per job, every tick recorded
            self._warned[name] = now
            self.log.warning("ticks missed: no eligible worker", job=name, selector=labels)
        self.tasks.background(self.record(job, fire_ms, why, quiet=True))

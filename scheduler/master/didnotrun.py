"""The did-not-run detector: every due tick of every active job gets a record.

The leader master checks, every ``notify.did_not_run_interval``, that each tick
of each job that is not suspended was accounted for by
``tick + starting_deadline + notify.did_not_run_grace`` (the job's
``starting_deadline``, else ``worker.default_starting_deadline``). A tick is
accounted for when the job's tick fence (``ticks/<job>``) reached it: its
claim, its ``skipped`` or ``missed`` record, or the gap records of the claim
that jumped over it (``workers.accounting``) all move the fence. So only the
ticks after the fence can be unaccounted, whatever the cause (no worker
eligible, every worker stopped or cut off, a fleet that went silent).

Rules:

- The ``missed`` record (reason :data:`NO_RECORD`) is written exactly as a
  worker writes one: a claim of the tick fence with no lock
  (``scheduler.etcd.claim_txn``), a create-only compare on ``ticks/<job> < T``.
  A tick that ran (or that a worker takes at the same moment) already moved
  the fence, so the claim loses and nothing is written; a tick recorded here
  can no longer be claimed by a worker (the fence is past it). Sent again after
  a lost reply, the same run id is recognised (no duplicate).
- Several overdue ticks of one job: the latest is claimed with the fence, and
  the ticks between the fence's previous value and it get their records in the
  same way as a worker's gap records (the fence write is atomic: one owner per
  gap). At most ``notify.did_not_run_max_ticks`` records per job per sweep;
  past that, the last record says about how many more ticks it stands for.
- Look-back: from the fence; for a job whose definition changed since the
  fence was written (or that never ran), from the moment this master first saw
  that definition while leader (a resumed or edited job is judged by its new
  schedule only from then on: no records for ticks before it was resumed).
- At most :data:`MAX_RECORDS_PER_SWEEP` records per sweep in all; the rest wait
  for the next sweep. Each sweep reads ``jobs/`` and ``ticks/`` once.
- Each record is logged, counted (``etcron_did_not_run_total{job}``) and, being
  a ``missed`` run record, notified by the notification service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from scheduler.clock import Clock
from scheduler.config import Config
from scheduler.etcd.claim_txn import ClaimRequest, Outcome, TickFence, claim
from scheduler.etcd.client import EtcdClient, EtcdError, op_put
from scheduler.keyspace import Keyspace, decode_tick
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, from_ms, tick_ms
from scheduler.signing import spec_bytes

log = structlog.get_logger("etcron.didnotrun")

NO_RECORD = "no record: did not run"
MAX_RECORDS_PER_SWEEP = 5000
BATCH = 64


@dataclass(frozen=True, slots=True)
class Overdue:
    job: JobSpec
    ticks: list[int]
    """Overdue ticks to record, oldest first; the last one is claimed with the fence."""
    more: int
    """About how many overdue ticks before the last one are not listed."""


class DidNotRun:
    def __init__(
        self,
        client: EtcdClient,
        ks: Keyspace,
        config: Config,
        *,
        identity: str,
        is_leader: asyncio.Event,
        clock: Clock | None = None,
        on_missed: Callable[[str, int], None] | None = None,
    ) -> None:
        self.client = client
        self.ks = ks
        self.cfg = config.notify
        self.default_deadline = config.worker.default_starting_deadline
        self.identity = identity
        self.is_leader = is_leader
        self.clock = clock or Clock()
        self.on_missed = on_missed
        self._seen: dict[str, tuple[int, int]] = {}
        """job -> (definition mod revision, epoch ms when this leader first saw it)."""

    async def run(self) -> None:
        """Sweep while leader, forever (cancel to stop)."""
        while True:
            await self.is_leader.wait()
            self._seen.clear()
            while self.is_leader.is_set():
                try:
                    await self.sweep()
                except EtcdError as exc:
                    log.warning("did-not-run sweep: etcd error", error=str(exc))
                except Exception:
                    log.exception("did-not-run sweep failed; trying again next interval")
                await asyncio.sleep(self.cfg.did_not_run_interval)

    async def sweep(self) -> int:
        """One check of every job; returns how many ``missed`` records were written."""
        jobs, _ = await self.client.get_prefix(self.ks.jobs)
        fences, _ = await self.client.get_prefix(self.ks.ticks)
        fence = {Keyspace.tail(kv.key, self.ks.ticks): kv for kv in fences}
        now_ms = tick_ms(self.clock.now())
        written = 0
        for kv in jobs:
            if written >= MAX_RECORDS_PER_SWEEP:
                break
            try:
                job = JobSpec.from_json(spec_bytes(kv.value))  # signed or not
            except ValueError:
                continue
            rev, seen_ms = self._seen.get(job.name, (0, 0))
            if rev != kv.mod_revision:
                rev, seen_ms = kv.mod_revision, now_ms
                self._seen[job.name] = (rev, seen_ms)
            if job.suspend:
                continue
            f = fence.get(job.name)
            after = -1
            if f is not None:
                with contextlib.suppress(ValueError):
                    after = decode_tick(f.value)
            if f is None or f.mod_revision < kv.mod_revision:
                after = max(after, seen_ms - 1)
            overdue = self.overdue(job, after, now_ms)
            if overdue is not None:
                written += await self._record(overdue)
        if self._seen.keys() - {Keyspace.tail(kv.key, self.ks.jobs) for kv in jobs}:
            names = {Keyspace.tail(kv.key, self.ks.jobs) for kv in jobs}
            self._seen = {k: v for k, v in self._seen.items() if k in names}
        return written

    def deadline_ms(self, job: JobSpec) -> int:
        deadline = job.starting_deadline or self.default_deadline
        return int(1000 * (deadline + self.cfg.did_not_run_grace))

    def overdue(self, job: JobSpec, after_ms: int, now_ms: int) -> Overdue | None:
        """The ticks strictly after ``after_ms`` past their deadline at ``now_ms``."""
        sched, zone = job.schedule_obj(), job.zone()
        cutoff = now_ms - self.deadline_ms(job)
        if after_ms < 0 or cutoff <= after_ms:
            return None  # (no fence and no look-back: nothing is owed yet)
        try:
            first = tick_ms(sched.next_after(from_ms(max(after_ms, 0)), zone))
        except ValueError:
            return None
        if first > cutoff:
            return None
        most = self.cfg.did_not_run_max_ticks
        ticks = [first]
        while len(ticks) < most:
            nxt = tick_ms(sched.next_after(from_ms(ticks[-1]), zone))
            if nxt > cutoff:
                return Overdue(job, ticks, 0)
            ticks.append(nxt)
        latest = sched.latest_at_or_before(from_ms(cutoff), zone)
        last = tick_ms(latest) if latest is not None else ticks[-1]
        if last <= ticks[-1]:
            return Overdue(job, ticks, 0)
        period = max(1, (ticks[-1] - ticks[0]) // (len(ticks) - 1))
        kept = ticks[:-1]
        more = max(1, (last - kept[-1]) // period - 1)
        return Overdue(job, [*kept, last], more)

    async def _record(self, o: Overdue) -> int:
        job = o.job
        now = self.clock.now()
        records = []
        for i, ms in enumerate(o.ticks):
            message = NO_RECORD
            if o.more and i == len(o.ticks) - 1:
                message += f" (and about {o.more} earlier ticks)"
            tick = from_ms(ms)
            records.append(RunRecord.missed(job.name, tick, message, worker=None, end=now))
        last = records[-1]
        req = ClaimRequest.record_only(
            TickFence(self.ks.tick(job.name), o.ticks[-1]),
            run_id=last.run_id,
            record_key=self.ks.run(job.name, last.run_id),
            record_value=last.to_json(),
        )
        if not self.is_leader.is_set():
            return 0
        c = await claim(self.client, req)
        if c.outcome is not Outcome.WON:
            return 0  # the tick was taken (it ran, or was recorded) meanwhile
        since = c.replaced if c.replaced is not None else -1
        gap = [r for r in records[:-1] if tick_ms(r.tick) > since]
        for i in range(0, len(gap), BATCH):
            ops = [op_put(self.ks.run(r.job, r.run_id), r.to_json()) for r in gap[i : i + BATCH]]
            try:
                await self.client.txn_once([], ops)
            except EtcdError as exc:
                log.warning("could not record every missed tick", job=job.name, error=str(exc))
                gap = gap[:i]
                break
        n = len(gap) + 1
        log.warning(
            "ticks missed: no record by their deadline (did not run)",
            job=job.name,
            ticks=n,
            first=(gap[0] if gap else last).tick.isoformat(),
            last=last.tick.isoformat(),
        )
        if self.on_missed is not None:
            self.on_missed(job.name, n)
        return n

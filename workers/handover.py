"""Hand-over: while commits are slow, a ``forbid`` run passes its lock to the next tick.

A ``forbid`` run costs two commits in turn: its release, then the next tick's
claim, which cannot commit before the release has. On a healthy etcd that is a
few milliseconds. When the leader's disk turns slow (commits of 0.3-1 s) the two
no longer fit into a one-second period, and every-second jobs lose ticks.

So while the worker's claims are slow (``Pace.slow``), a ``forbid`` run whose
next tick is near ends with one transaction that releases its lock *and* claims
that tick (``scheduler.etcd.claim_txn.release_and_claim``): the same worker runs the
next tick, and a run costs one commit. The next tick is "near" when it is due
within ``ahead`` (the claim lead time) or was due less than ``ahead`` ago
(while commits are slow, other workers wait that long before they record a
busy tick as skipped, ``workers.claimer``).

The hand-over is only tried when this worker could claim the tick anyway: the
job still exists, is ``forbid`` and not suspended, the worker is eligible (not
draining, clock within bounds, labels match), has room and a live session, and
the tick is not visibly taken. Load is not spread while commits are slow: a job
stays with the worker that holds it until commits are fast again (or a tick is
taken by another worker, when its run took longer than the hand-over window).
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.etcd.claim_txn import Handed, HandOver, TickFence
from scheduler.keyspace import Keyspace
from scheduler.model import Concurrency, JobSpec
from scheduler.runs import LockValue, RunRecord, from_ms, new_run_id, tick_ms
from workers.cluster_time import ClusterClock
from workers.eligibility import Eligibility
from workers.membership import Membership
from workers.missed import MissedTicks
from workers.pace import Pace
from workers.run_handle import NextRun, RunHandle
from workers.runner import MIN_LEASE_LEFT
from workers.runset import RunSet
from workers.state import JobTable, TickView


def next_tick(job: JobSpec, run_tick_ms: int, now_ms: int, ahead_ms: int) -> int | None:
    """The tick a run of ``job`` (for ``run_tick_ms``) that ends at ``now_ms`` may
    hand its lock to, or None when no tick is within ``ahead_ms`` of now."""
    sched, zone = job.schedule_obj(), job.zone()
    cand = tick_ms(sched.next_after(from_ms(run_tick_ms), zone))
    if cand + ahead_ms < now_ms:  # past its window: the latest tick, or the next one
        last = sched.latest_at_or_before(from_ms(now_ms), zone)
        if last is not None and tick_ms(last) + ahead_ms >= now_ms:
            cand = tick_ms(last)
        else:
            cand = tick_ms(sched.next_after(from_ms(now_ms), zone))
    if abs(cand - now_ms) > ahead_ms:
        return None
    return cand


class HandOvers:
    """``next_run``: the hand-over a ``forbid`` run's release carries, if any
    (the rules are the module docstring's). A won hand-over adds its run to
    the run set at once and calls ``start`` (the worker starts it at its tick)."""

    def __init__(
        self,
        ks: Keyspace,
        worker_id: str,
        *,
        clock: ClusterClock,
        table: JobTable,
        ticks: TickView,
        pace: Pace,
        runs: RunSet,
        membership: Membership,
        eligibility: Eligibility,
        missed: MissedTicks,
        stats: dict[str, int],
        stopping: Callable[[], bool],
        start: Callable[[RunHandle, int], None],
    ) -> None:
        self.ks = ks
        self.id = worker_id
        self.clock = clock
        self.table = table
        self.ticks = ticks
        self.pace = pace
        self.runs = runs
        self.membership = membership
        self.eligibility = eligibility
        self.missed = missed
        self.stats = stats
        self.stopping = stopping
        self.start = start

    def next_run(self, h: RunHandle) -> NextRun | None:
        """While commits are slow, the next tick's claim to send with ``h``'s
        release (``workers.handover``); None: a plain release."""
        job = self.table.jobs.get(h.job.name)
        session = self.membership.session
        if (
            job is None
            or job.concurrency is not Concurrency.FORBID
            or h.lock_key != self.ks.lock(job.name)
            or not self.pace.slow
            or self.stopping()
            or session is None
            or session.remaining() < 2 * MIN_LEASE_LEFT
            or not self.eligibility.may_claim(job)
            or not self.runs.room_after_one()
        ):
            return None
        now_ms = int(self.clock.time() * 1000)
        fire_ms = next_tick(job, tick_ms(h.record.tick), now_ms, self.pace.ahead_ms)
        if fire_ms is None or self.ticks.taken(job.name, fire_ms):
            return None
        tick = from_ms(fire_ms)
        run_id = new_run_id(tick)
        lease = session.lease_id
        rec = RunRecord.started(
            job.name, run_id, tick, worker=self.id, lease=lease, start=max(self.clock.now(), tick)
        )
        lock_value = LockValue(worker=self.id, run_id=run_id, tick=tick, lease=lease).to_json()
        record_key = self.ks.run(job.name, run_id)
        req = HandOver(
            TickFence(self.ks.tick(job.name), fire_ms), lock_value, lease, record_key, rec.to_json()
        )
        sent = self.clock.monotonic()

        def handed(result: Handed) -> None:
            self.pace.took(self.clock.monotonic() - sent)
            if not result.token:
                return
            self.missed.account(job, result, fire_ms)
            rec.fencing_token = result.token
            nxt = RunHandle(job, rec, h.lock_key, record_key, result.token)
            self.runs.add(nxt)  # before the lock could be seen without its run
            self.stats["won"] += 1
            self.stats["handovers"] += 1
            self.start(nxt, fire_ms)

        return req, handed

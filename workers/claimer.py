"""The claim path: from a due (job, tick) to a started run.

``Claimer.due`` ranks the live eligible workers for the tick (rendezvous hashing) and
sets a timer for this worker's turn; at its turn a worker that can already see
the tick taken stops there, without an etcd write. Otherwise it sends the claim
transaction (``scheduler.etcd.claim_txn``) ``claim_ahead`` before the tick and, if
it won, prepares the run and starts it at the tick. Manual runs, ``replace``
and the records of missed and skipped ticks go the same way.

The claimer depends on the membership (the session a claim is made under),
the run set (capacity, and where a won run goes), the eligibility rules, the
peers (ranking), the tick fences seen (``TickView``) and the run starter (what
a won claim becomes, ``workers.starter``). Who is eligible:
``workers.eligibility``; the long ``replace`` take-over: ``workers.replacing``.

Protocol map (each rule of the claim protocol, and what keeps it):

- **claim** — one transaction takes the tick fence ``ticks/J`` and the lock:
  ``scheduler.etcd.claim_txn.claim`` (a ``ClaimRequest`` with a ``TickFence``),
  sent here by ``_claim_and_run`` from ``_tick``.
- **skip-record** — a ``forbid`` tick whose lock is held gets a ``skipped``
  record, by exactly one worker: the second transaction of ``claim``; the
  record is ``RunRecord.skipped``; early claims ask again (``Retry.ASK_AGAIN``).
- **missed records** — the fence alone, no lock (``ClaimRequest.record_only``):
  ``workers.missed.MissedTicks.record``; ticks a fence write jumped over:
  ``workers.accounting.record_gap`` via ``MissedTicks.account``; silent jobs: the
  leader's ``scheduler.master.didnotrun``.
- **hand-over** — release and the next tick's claim in one transaction:
  ``scheduler.etcd.claim_txn.release_and_claim``, prepared by ``workers.handover.HandOvers.next_run``
  (which tick: ``next_tick`` there), sent by ``workers.runner.Runner.finish``.
- **release** — the final record, and the lock deleted only if its mod
  revision is still our token: ``scheduler.etcd.claim_txn.release``, from
  ``workers.runner.Runner.finish``.
- **replace** — claim the fence with no lock, then stop the holder and take the
  lock: ``workers.replacing.take_over``, over ``scheduler.etcd.claim_txn.acquire``.
- **manual runs** — a ``TriggerFence`` creates ``taken/J/R`` once per request:
  ``scheduler.etcd.fences.TriggerFence``, sent by ``_manual`` here; the leader
  deletes ``taken`` keys whose request is gone
  (``scheduler.master.housekeeping``, ``_clean_taken``).
- **repairs** — ``workers.repair.Repairs``: a lock no live run stands behind
  (``lock``, from ``_check_lock`` here), a fence ahead of cluster time
  (``fence``, from ``workers.watches.Watches.check_fences``).
"""

from __future__ import annotations

import asyncio
import enum
import zlib
from datetime import datetime

import structlog

from scheduler.config import WorkerConfig
from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.claim_txn import (
    ClaimRequest,
    Outcome,
    TickFence,
    TriggerFence,
    claim,
)
from scheduler.etcd.client import EtcdClient, EtcdUnavailable, KeyValue
from scheduler.keyspace import Keyspace
from scheduler.model import Concurrency, JobSpec
from scheduler.run_requests import Taken
from scheduler.runs import LockValue, RunRecord, from_ms, new_run_id, tick_ms
from workers.cluster_time import ClusterClock
from workers.eligibility import Eligibility
from workers.membership import Membership
from workers.metrics import WorkerMetrics
from workers.missed import AT_CAPACITY, DEADLINE, MissedTicks
from workers.pace import Pace
from workers.peers import rank
from workers.repair import Repairs
from workers.replacing import take_over
from workers.run_handle import RunHandle
from workers.runset import RunSet
from workers.standing import Standing
from workers.starter import RunStarter
from workers.state import JobTable, PeerView, TickView
from workers.tasks import Tasks


class Retry(enum.Enum):
    """What ``_claim_and_run`` tells its caller."""

    NO = "no"
    """Done: the run started, the tick was taken, or it was recorded (skipped)."""
    ASK_AGAIN = "ask again"
    """Busy (``forbid``) and no skip recorded (an early claim): ask again at the
    tick, or shortly while commits are slow."""


class Claimer:
    """Turns a due tick (or a manual-run request) into a started run; see the module docstring.

    ``pending`` holds the manual-run requests seen and not yet consumed (the
    worker's watch keeps it).
    """

    def __init__(
        self,
        client: EtcdClient,
        batcher: TxnBatcher,
        cfg: WorkerConfig,
        ks: Keyspace,
        *,
        clock: ClusterClock,
        table: JobTable,
        ticks: TickView,
        peers: PeerView,
        pace: Pace,
        runs: RunSet,
        membership: Membership,
        standing: Standing,
        eligibility: Eligibility,
        missed: MissedTicks,
        starter: RunStarter,
        tasks: Tasks,
        repairs: Repairs,
        metrics: WorkerMetrics,
        stats: dict[str, int],
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.client = client
        self.batcher = batcher
        self.cfg = cfg
        self.id = cfg.id
        self.ks = ks
        self.clock = clock
        self.table = table
        self.ticks = ticks
        self.peers = peers
        self.pace = pace
        self.runs = runs
        self.membership = membership
        self.standing = standing
        self.eligibility = eligibility
        self.missed = missed
        self.starter = starter
        self.tasks = tasks
        self.repairs = repairs
        self.metrics = metrics
        self.stats = stats
        self.stopping = stopping
        self.log = log
        self.pending: set[str] = set()

    def start_tick(self, job: JobSpec, fire_ms: int) -> None:
        """Compete for (job, tick) now, on a task of its own."""
        self.tasks.spawn(self._tick(job, fire_ms))

    def start_manual(self, key: str) -> None:
        """Run the manual-run request ``key`` if its job is known here."""
        try:
            name, request = self.ks.parse_trigger(key)
        except ValueError:
            return  # not a request's key: nothing to run
        job = self.table.jobs.get(name)
        if job is not None:
            self.tasks.spawn(self._manual(job, key, request))

    def _deadline_ms(self, job: JobSpec) -> int:
        return int(1000 * (job.starting_deadline or self.cfg.default_starting_deadline))

    def due(self, job: JobSpec, fire_ms: int) -> None:
        """(job, tick) is due: compete now if it is my turn, else check back at my turn.

        Waiting for a turn costs a timer, not a task: most turns end by seeing
        the tick taken by the worker ranked first.
        """
        if not self.eligibility.may_claim(job):
            self.missed.nobody_eligible_later(job, fire_ms)
            return
        peers = self.peers.list()
        turn = rank(self.id, peers, job.name, fire_ms, job.selector)
        if self.runs.full():
            # let every other worker have its turn first; if nobody took the
            # tick, leave a trace instead of dropping it silently
            turn = max(turn, len(peers)) + 1
        ahead = self.pace.ahead_ms
        at_ms = fire_ms - ahead + int(turn * self.cfg.handoff_delay * 1000)
        delay = at_ms / 1000 - self.clock.time()
        if delay <= 0:
            self.start_tick(job, fire_ms)
        else:
            self.clock.call_at(at_ms / 1000, self._turn, job.name, fire_ms)

    def _turn(self, name: str, fire_ms: int) -> None:
        job = self.table.jobs.get(name)
        if job is None or self.stopping.is_set():
            return
        if self.ticks.taken(name, fire_ms):
            self.stats["seen_taken"] += 1
            return
        self.start_tick(job, fire_ms)

    async def _tick(self, job: JobSpec, fire_ms: int) -> None:
        """Compete for (job, tick) now, unless it is visibly taken."""
        tick = from_ms(fire_ms)
        delay = 0.1
        while True:
            job = self.table.jobs.get(job.name) or job
            if self.ticks.taken(job.name, fire_ms):
                self.stats["seen_taken"] += 1
                return
            now_ms = int(self.clock.time() * 1000)
            nxt = job.schedule_obj().next_after(tick, job.zone())
            if tick_ms(nxt) + self.pace.late_grace_ms() <= now_ms:
                return  # superseded by a later tick, which is the one to catch up
            if not self.eligibility.may_claim(job):
                return
            if now_ms - fire_ms > self._deadline_ms(job):
                await self.missed.record(job, fire_ms, DEADLINE)
                return
            if self.runs.full():
                await self.missed.record(job, fire_ms, AT_CAPACITY)
                return
            try:
                early = now_ms < fire_ms
                # while commits are slow, the previous run's release may still be
                # on its way at the tick: ask again for a while before skipping
                slow = self.pace.slow
                if early and slow:
                    await self._after_previous(job, fire_ms)
                patient = early or (slow and now_ms < fire_ms + self.pace.ahead_ms)
                retry = await self._claim_and_run(
                    job, TickFence(self.ks.tick(job.name), fire_ms), tick, record_skip=not patient
                )
                if retry is Retry.NO or not patient:
                    return
                if early and not slow:
                    await self._sleep_until(fire_ms)  # the run may end before the tick
                else:
                    # slow commits: the release we wait for lands any moment; asking
                    # only at the tick would start the run a commit late
                    await asyncio.sleep(0.1 if not early else max(0.1, self.pace.ahead / 4))
                continue
            except EtcdUnavailable as exc:
                self.log.warning("claim failed, retrying", job=job.name, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _after_previous(self, job: JobSpec, fire_ms: int) -> None:
        """Claims of one job go in tick order: an early claim waits (locally) while
        the previous tick is still pending, so that with a long ``ahead`` (slow
        commits) it cannot overtake that tick's claim and make it missed. (With
        the default ``ahead``, shorter than any period, it cannot.)"""
        prev = job.schedule_obj().latest_at_or_before(from_ms(fire_ms - 1), job.zone())
        if prev is None:
            return
        prev_ms = tick_ms(prev)
        until = min(fire_ms, prev_ms + self.pace.ahead_ms + 100)
        await self.ticks.wait_taken(job.name, prev_ms, until / 1000, self.clock)

    async def _manual(self, job: JobSpec, trigger_key: str, request: str) -> None:
        """A manual run (even of a suspended job) on an eligible worker."""
        if not self.eligibility.matches(job):
            return
        turn = rank(
            self.id, self.peers.list(), job.name, zlib.crc32(request.encode()), job.selector
        )
        if turn:
            await asyncio.sleep(turn * self.cfg.handoff_delay)
        # until the request is consumed (by us or another worker): a request seen
        # before our session exists, or while etcd is unreachable, is not dropped
        while not self.standing.draining and trigger_key in self.pending:
            await self.membership.session_ready.wait()
            if self.standing.draining:
                return
            try:
                fence = TriggerFence(
                    trigger_key,
                    self.ks.taken(job.name, request),
                    Taken(worker=self.id).encode(),
                )
                await self._claim_and_run(
                    job, fence, self.clock.now(), manual=True, request=request
                )
                return
            except EtcdUnavailable:
                await asyncio.sleep(0.5)

    async def _sleep_until(self, at_ms: int) -> None:
        await self.clock.sleep_until(at_ms / 1000)

    async def _claim_and_run(
        self,
        job: JobSpec,
        fence: TickFence | TriggerFence,
        tick: datetime,
        *,
        manual: bool = False,
        record_skip: bool = True,
        request: str = "",
    ) -> Retry:
        """Claim and, if won, run (a scheduled tick starts at the tick itself).

        Returns :attr:`Retry.ASK_AGAIN` when the job was busy (``forbid``) and no
        skip was recorded because ``record_skip`` was off (an early claim): the
        caller asks again. Otherwise :attr:`Retry.NO` (won, taken, or recorded).
        """
        session, client = self.membership.session, self.batcher
        if session is None or session.remaining() <= 0:
            raise EtcdUnavailable("no live session")
        run_id = new_run_id(tick, manual=manual)
        rec = RunRecord.started(
            job.name,
            run_id,
            tick,
            worker=self.id,
            lease=session.lease_id,
            start=max(self.clock.now(), tick),
            manual=manual,
            request_id=request,
        )
        policy = job.concurrency
        lock_key = (
            self.ks.run_lock(job.name, run_id)
            if policy is Concurrency.ALLOW
            else self.ks.lock(job.name)
        )
        lock_value = LockValue(
            worker=self.id, run_id=run_id, tick=tick, lease=session.lease_id
        ).to_json()
        claim_lock = None if policy is Concurrency.REPLACE else lock_key  # replace: take_over locks
        req = ClaimRequest(  # a tick or a manual run, by the fence (see the named constructors)
            fence=fence,
            lock_key=claim_lock,
            lock_value=lock_value,
            lease=session.lease_id,
            run_id=run_id,
            record_key=self.ks.run(job.name, run_id),
            record_value=rec.to_json(),
            skip_value=RunRecord.skipped(rec).to_json()
            if policy is Concurrency.FORBID and record_skip
            else None,
        )
        self.stats["claims"] += 1
        sent = self.clock.monotonic()
        with self.runs.claiming():
            result = await claim(client, req)
        self.pace.took(self.clock.monotonic() - sent)
        self.stats["txns"] += result.txns
        if not manual:
            self.missed.account(job, result, tick_ms(tick))
        if result.outcome is Outcome.TAKEN:
            self.stats["taken"] += 1
            return Retry.NO
        if result.outcome is Outcome.BUSY:
            self.stats["busy"] += 1
            if result.lock is not None:
                self._check_lock(job, result.lock)
            if result.recorded:
                self.metrics.skipped(job.name)
                self.log.info(
                    "tick skipped: previous run still active", job=job.name, tick=str(tick)
                )
            return Retry.NO if result.recorded else Retry.ASK_AGAIN
        token = result.token
        start_at = None if manual else tick_ms(tick)
        if policy is Concurrency.REPLACE:
            if start_at is not None:
                await self._sleep_until(start_at)
            token = await take_over(
                self.client, self.ks, self.cfg, job, lock_key, lock_value, session
            )
            if not token:
                return Retry.NO
        rec.fencing_token = token
        self.stats["won"] += 1
        handle = RunHandle(job, rec, lock_key, self.ks.run(job.name, run_id), token)
        await self.starter.execute(handle, start_at)
        return Retry.NO

    def _check_lock(self, job: JobSpec, lock: KeyValue) -> None:
        """A lock no live run stands behind is repaired (``workers.repair``)."""
        why = ""
        if not lock.lease:
            why = "the lock has no lease: no session stands behind it"
        elif (
            self.membership.session is not None
            and lock.lease == self.membership.session.lease_id
            and job.concurrency is Concurrency.FORBID
            and not self.runs.of_job(job.name)
        ):
            why = "the lock is on this worker's session but its run is not running here"
        if why and lock.key not in self.repairs.running:
            self.tasks.background(self._repair_lock(job.name, lock, why))

    async def _repair_lock(self, job: str, lock: KeyValue, why: str) -> None:
        self.repairs.running.add(lock.key)
        try:
            await self.repairs.lock(job, lock, why)
        finally:
            self.repairs.running.discard(lock.key)

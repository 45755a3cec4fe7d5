"""The claim path: from a due (job, tick) to a started run.

``_due`` ranks the live eligible workers for the tick (rendezvous hashing) and
sets a timer for this worker's turn; at its turn a worker that can already see
the tick taken stops there, without an etcd write. Otherwise it sends the claim
transaction (``scheduler.etcd.claim``) ``claim_ahead`` before the tick and, if
it won, prepares the run and starts it at the tick. Manual runs, ``replace``
and the records of missed and skipped ticks go the same way.

Protocol map (each rule of the claim protocol, and what keeps it):

- **claim** — one transaction takes the tick fence ``ticks/J`` and the lock:
  ``scheduler.etcd.claim.claim`` (a ``ClaimRequest`` with a ``TickFence``),
  sent here by ``_claim_and_run`` from ``_tick``.
- **skip-record** — a ``forbid`` tick whose lock is held gets a ``skipped``
  record, by exactly one worker: the second transaction of ``claim``; the
  record is ``_skip_record`` here; early claims ask again (``Retry.ASK_AGAIN``).
- **missed records** — the fence alone, no lock (``ClaimRequest.record_only``):
  ``_record_missed`` here; ticks a fence write jumped over:
  ``workers.accounting.record_gap`` via ``_account``; silent jobs: the
  leader's ``scheduler.master.didnotrun``.
- **hand-over** — release and the next tick's claim in one transaction:
  ``scheduler.etcd.claim.release_and_claim``, prepared by ``_next_run`` here
  (which tick: ``workers.handover.next_tick``), sent by ``workers.runner.Runner.finish``.
- **release** — the final record, and the lock deleted only if its mod
  revision is still our token: ``scheduler.etcd.claim.release``, from
  ``workers.runner.Runner.finish``.
- **replace** — claim the fence with no lock, then stop the holder and take the
  lock: ``_replace`` here, over ``scheduler.etcd.claim.acquire``.
- **manual runs** — a ``TriggerFence`` creates ``taken/J/R`` once per request:
  ``scheduler.etcd.claim.TriggerFence``, sent by ``_manual`` here; the leader
  deletes ``taken`` keys whose request is gone
  (``scheduler.master.housekeeping``, ``_clean_taken``).
- **repairs** — ``workers.repair.Repairs``: a lock no live run stands behind
  (``lock``, from ``_check_lock`` here), a fence ahead of cluster time
  (``fence``, from ``workers.worker.Worker._repair_fence``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
import zlib
from datetime import datetime

from scheduler.etcd.claim_txn import (
    Claim,
    ClaimRequest,
    Handed,
    HandOver,
    Outcome,
    TickFence,
    TriggerFence,
    acquire,
    claim,
)
from scheduler.etcd.client import EtcdUnavailable, KeyValue
from scheduler.etcd.session import Session
from scheduler.model import Concurrency, JobSpec
from scheduler.runs import LockValue, RunRecord, RunStatus, from_ms, new_run_id, tick_ms
from workers import orphans
from workers.accounting import UNCLAIMED, record_gap
from workers.cgroups import CgroupHost
from workers.core import WorkerCore
from workers.executor import OutputSink
from workers.handover import next_tick
from workers.output import EtcdOutput, prune_local_logs, run_output_limit
from workers.peers import rank
from workers.runner import MIN_LEASE_LEFT, NextRun, RunHandle, Runner, started_record

NO_ELIGIBLE = "no eligible worker"
NO_ELIGIBLE_GRACE = 1.5
"""Seconds after a tick before it is recorded missed for want of an eligible worker."""

MIN_PERIOD_MS = 1000
"""No schedule fires twice within a second (cron has whole seconds, ``@every`` >= 1 s)."""


class Retry(enum.Enum):
    """What ``_claim_and_run`` tells its caller."""

    NO = "no"
    """Done: the run started, the tick was taken, or it was recorded (skipped)."""
    ASK_AGAIN = "ask again"
    """Busy (``forbid``) and no skip recorded (an early claim): ask again at the
    tick, or shortly while commits are slow."""


def _skip_record(rec: RunRecord) -> bytes:
    """The record a ``forbid`` tick gets when its previous run is still active."""
    return rec.model_copy(
        update={
            "status": RunStatus.SKIPPED,
            "start": None,
            "message": "previous run still active (concurrency: forbid)",
        }
    ).to_json()


class Claiming(WorkerCore):
    def _may_claim(self, job: JobSpec) -> bool:
        """Eligible for this job now (capacity and the session are checked apart:
        see ``_tick``; a tick waits through an etcd outage until its deadline).

        A worker whose clock is not yet compared with its peers' does not
        claim; one outside ``max_clock_skew`` stands back while a peer with a
        good clock can take the job (invariant I7).
        """
        if self.draining or job.suspend or not self._matches(job):
            return False
        if self.cfg.stop_claiming_on_skew and not self.clock_ok():
            # a clock not yet compared with the others never claims (it will be
            # within a registration interval); a wrong one only when no worker
            # with a good clock can (it claims on cluster time, corrected)
            known = self.clock.known
            return known and not self.peers.healthy_for(self.id, job.selector)
        return True

    def _full(self) -> bool:
        return len(self.runs) + self._claiming >= self.cfg.capacity

    def _deadline_ms(self, job: JobSpec) -> int:
        return int(1000 * (job.starting_deadline or self.cfg.default_starting_deadline))

    def _due(self, job: JobSpec, fire_ms: int) -> None:
        """(job, tick) is due: compete now if it is my turn, else check back at my turn.

        Waiting for a turn costs a timer, not a task: most turns end by seeing
        the tick taken by the worker ranked first.
        """
        if not self._may_claim(job):
            if self._nobody_eligible(job, fire_ms):
                # after every eligible worker would have had its turn (one may just have joined)
                delay = fire_ms / 1000 - self.clock.time() + NO_ELIGIBLE_GRACE
                asyncio.get_running_loop().call_later(
                    max(0.0, delay), self._no_eligible, job.name, fire_ms
                )
            return
        peers = self.peers.list()
        turn = rank(self.id, peers, job.name, fire_ms, job.selector)
        if self._full():
            # let every other worker have its turn first; if nobody took the
            # tick, leave a trace instead of dropping it silently
            turn = max(turn, len(peers)) + 1
        ahead = self.pace.ahead_ms
        at_ms = fire_ms - ahead + int(turn * self.cfg.handoff_delay * 1000)
        delay = at_ms / 1000 - self.clock.time()
        if delay <= 0:
            self._spawn(self._tick(job, fire_ms))
        else:
            asyncio.get_running_loop().call_later(delay, self._turn, job.name, fire_ms)

    def _nobody_eligible(self, job: JobSpec, fire_ms: int) -> bool:
        """Does no live worker match the job's selector, and am I the one (the first
        of all live workers with a good clock) to record its ticks as missed?"""
        if job.suspend or not job.selector or self.draining or not self.clock_ok():
            return False
        peers = self.peers.list()
        if self._matches(job) or any(p.lease and p.matches(job.selector) for p in peers):
            return False
        return rank(self.id, peers, job.name, fire_ms, {}) == 0

    def _matches(self, job: JobSpec) -> bool:
        return all(self.cfg.labels.get(k) == v for k, v in job.selector.items())

    def _no_eligible(self, name: str, fire_ms: int) -> None:
        job = self.table.jobs.get(name)
        if job is None or self._stop.is_set() or self.ticks.taken(name, fire_ms):
            return
        if not self._nobody_eligible(job, fire_ms):
            return
        labels = ", ".join(f"{k}={v}" for k, v in sorted(job.selector.items()))
        why = f"{NO_ELIGIBLE}: no live worker has the labels of its selector ({labels})"
        now = self.clock.monotonic()
        quiet = now - self._no_eligible_warned.get(name, -3600.0) < 60
        if not quiet:  # one line a minute per job, every tick recorded
            self._no_eligible_warned[name] = now
            self.log.warning("ticks missed: no eligible worker", job=name, selector=labels)
        self._background_task(self._record_missed(job, fire_ms, why, quiet=True))

    def _turn(self, name: str, fire_ms: int) -> None:
        job = self.table.jobs.get(name)
        if job is None or self._stop.is_set():
            return
        if self.ticks.taken(name, fire_ms):
            self.stats["seen_taken"] += 1
            return
        self._spawn(self._tick(job, fire_ms))

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
            if not self._may_claim(job):
                return
            if now_ms - fire_ms > self._deadline_ms(job):
                await self._record_missed(job, fire_ms)
                return
            if self._full():
                await self._record_missed(job, fire_ms, "every eligible worker was at capacity")
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
        await self.ticks.wait_taken(job.name, prev_ms, until / 1000 - self.clock.time())

    async def _manual(self, job: JobSpec, trigger_key: str, request: str) -> None:
        """A manual run (even of a suspended job) on an eligible worker."""
        if not self._matches(job):
            return
        turn = rank(
            self.id, self.peers.list(), job.name, zlib.crc32(request.encode()), job.selector
        )
        if turn:
            await asyncio.sleep(turn * self.cfg.handoff_delay)
        # until the request is consumed (by us or another worker): a request seen
        # before our session exists, or while etcd is unreachable, is not dropped
        while not self.draining and trigger_key in self.triggers:
            await self._session_ready.wait()
            if self.draining:
                return
            try:
                fence = TriggerFence(
                    trigger_key,
                    self.ks.taken(job.name, request),
                    json.dumps({"worker": self.id}).encode(),
                )
                await self._claim_and_run(
                    job, fence, self.clock.now(), manual=True, request=request
                )
                return
            except EtcdUnavailable:
                await asyncio.sleep(0.5)

    async def _record_missed(
        self,
        job: JobSpec,
        fire_ms: int,
        why: str = "no worker could start this tick within its starting deadline",
        *,
        quiet: bool = False,
    ) -> None:
        assert self.client is not None
        tick = from_ms(fire_ms)
        rec = RunRecord.missed(job.name, tick, why, worker=self.id)
        req = ClaimRequest.record_only(
            TickFence(self.ks.tick(job.name), fire_ms),
            run_id=rec.run_id,
            record_key=self.ks.run(job.name, rec.run_id),
            record_value=rec.to_json(),
        )
        with contextlib.suppress(EtcdUnavailable):
            c = await claim(self.batcher or self.client, req)
            if c.outcome is Outcome.WON:
                self.stats["missed"] += 1
                self.metrics.missed(job.name, why)
                if not quiet:
                    self.log.warning("tick missed", job=job.name, tick=str(tick), reason=why)
                self._account(job, c, fire_ms)

    async def _sleep_until(self, at_ms: int) -> None:
        delay = at_ms / 1000 - self.clock.time()
        if delay > 0:
            await asyncio.sleep(delay)

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
        session, client = self.session, self.batcher
        if session is None or client is None or session.remaining() <= 0:
            raise EtcdUnavailable("no live session")
        run_id = new_run_id(tick, manual=manual)
        rec = started_record(
            job,
            run_id,
            tick,
            self.id,
            session.lease_id,
            max(self.clock.now(), tick),
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
        req = ClaimRequest(  # a tick or a manual run, by the fence (see the named constructors)
            fence=fence,
            lock_key=None if policy is Concurrency.REPLACE else lock_key,  # replace: _replace locks
            lock_value=lock_value,
            lease=session.lease_id,
            run_id=run_id,
            record_key=self.ks.run(job.name, run_id),
            record_value=rec.to_json(),
            skip_value=_skip_record(rec) if policy is Concurrency.FORBID and record_skip else None,
        )
        self.stats["claims"] += 1
        self._claiming += 1
        sent = self.clock.monotonic()
        try:
            result = await claim(client, req)
        finally:
            self._claiming -= 1
        self.pace.took(self.clock.monotonic() - sent)
        self.stats["txns"] += result.txns
        if not manual:
            self._account(job, result, tick_ms(tick))
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
            token = await self._replace(job, lock_key, lock_value, session)
            if not token:
                return Retry.NO
        rec.fencing_token = token
        self.stats["won"] += 1
        handle = RunHandle(job, rec, lock_key, self.ks.run(job.name, run_id), token)
        await self._execute(handle, start_at)
        return Retry.NO

    def _account(self, job: JobSpec, result: Claim | Handed, fire_ms: int) -> None:
        """Record the ticks our fence write jumped over (``workers.accounting``)."""
        prev = result.replaced
        if prev is None or fire_ms - prev <= MIN_PERIOD_MS or self.client is None:
            return  # no tick fits between two ticks a second apart (the shortest period)
        if not self.clock.known:
            return
        if self.table.revisions.get(job.name, 0) > result.replaced_revision:
            return  # the schedule changed since: the gap is not the new schedule's
        first = tick_ms(job.schedule_obj().next_after(from_ms(prev), job.zone()))
        if first < fire_ms:
            self._background_task(self._record_gap(job, prev, fire_ms))

    async def _record_gap(self, job: JobSpec, prev: int, fire_ms: int) -> None:
        assert self.client is not None
        n = await record_gap(self.client, self.ks, job, prev, fire_ms, self.id, self.clock.now())
        self.stats["missed"] += n
        self.metrics.missed(job.name, UNCLAIMED, n)

    def _check_lock(self, job: JobSpec, lock: KeyValue) -> None:
        """A lock no live run stands behind is repaired (``workers.repair``)."""
        why = ""
        if not lock.lease:
            why = "the lock has no lease: no session stands behind it"
        elif (
            self.session is not None
            and lock.lease == self.session.lease_id
            and job.concurrency is Concurrency.FORBID
            and not any(h.job.name == job.name for h in self.runs.values())
        ):
            why = "the lock is on this worker's session but its run is not running here"
        if why and self.repairs is not None and lock.key not in self._repairing:
            self._background_task(self._repair_lock(job.name, lock, why))

    async def _repair_lock(self, job: str, lock: KeyValue, why: str) -> None:
        assert self.repairs is not None
        self._repairing.add(lock.key)
        try:
            await self.repairs.lock(job, lock, why)
        finally:
            self._repairing.discard(lock.key)

    async def _replace(self, job: JobSpec, lock_key: str, value: bytes, session: Session) -> int:
        """``replace``: ask the running one to die, then take the lock once it is free."""
        assert self.client is not None
        loop = asyncio.get_running_loop()
        give_up = (
            loop.time() + (job.timeout or 0) + self.cfg.kill_grace + 2 * self.cfg.lease_ttl + 5
        )
        asked = b""
        while loop.time() < give_up and session.remaining() > 0:
            try:
                token, holder = await acquire(self.client, lock_key, value, session.lease_id)
            except EtcdUnavailable:
                await asyncio.sleep(0.5)
                continue
            if token:
                return token
            if holder and holder != asked:
                # workers may not write kill requests (docs/security.md): a
                # replacement asks through replace/<job>, which the holder honours
                # for replace jobs only
                run_id = json.loads(holder).get("run_id")
                await self.client.put(
                    self.ks.replacing(job.name),
                    json.dumps({"run_id": run_id}).encode(),
                    lease=session.lease_id,
                )
                asked = holder
            await asyncio.sleep(0.1)
        self.log.error("replace: the previous run did not stop in time", job=job.name)
        return 0

    async def _execute(self, h: RunHandle, start_at_ms: int | None) -> None:
        """Run a won claim: prepared now, started at ``start_at_ms`` (None: at once)."""
        assert self.batcher is not None
        if self._runner is None or self._runner.client is not self.batcher:
            self._runner = Runner(
                self.batcher,
                self.id,
                kill_grace=self.cfg.kill_grace,
                allow_run_as=self.cfg.allow_run_as,
                default_user=self.admission.default_user,
                lease_left=self.lease_left,
                now=self.clock.now,
                guard_add=self._child_started,
                guard_remove=self._child_ended,
                sink_factory=self._output_sink,
                launch=self.launcher.at,
                next_run=self._next_run,
                observer=self.metrics,
                cgroups=functools.partial(CgroupHost.detect, self.cfg.cgroup_root),
            )
        self.runs[h.run_id] = h  # (a hand-over registered it already)
        self.stats["started"] += 1
        orphans.run_started(h.run_id)
        try:
            await self._runner.execute(h, start_at_ms)
        finally:
            orphans.run_ended(h.run_id)
            self.runs.pop(h.run_id, None)
            if self.cfg.log_dir is not None:
                prune_local_logs(self.cfg.log_dir / h.job.name, self.cfg.log_file_count)

    def _child_started(self, pid: int) -> None:
        self.guard.add(pid)
        orphans.main_started(pid)

    def _child_ended(self, pid: int) -> None:
        orphans.main_ended(pid)
        self.guard.remove(pid)

    def _next_run(self, h: RunHandle) -> NextRun | None:
        """While commits are slow, the next tick's claim to send with ``h``'s
        release (``workers.handover``); None: a plain release."""
        job = self.table.jobs.get(h.job.name)
        session = self.session
        if (
            job is None
            or job.concurrency is not Concurrency.FORBID
            or h.lock_key != self.ks.lock(job.name)
            or not self.pace.slow
            or self._stop.is_set()
            or session is None
            or session.remaining() < 2 * MIN_LEASE_LEFT
            or not self._may_claim(job)
            or len(self.runs) - 1 + self._claiming >= self.cfg.capacity
        ):
            return None
        now_ms = int(self.clock.time() * 1000)
        fire_ms = next_tick(job, tick_ms(h.record.tick), now_ms, self.pace.ahead_ms)
        if fire_ms is None or self.ticks.taken(job.name, fire_ms):
            return None
        tick = from_ms(fire_ms)
        run_id = new_run_id(tick)
        lease = session.lease_id
        rec = started_record(
            job, run_id, tick, self.id, lease, max(self.clock.now(), tick), manual=False
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
            self._account(job, result, fire_ms)
            rec.fencing_token = result.token
            nxt = RunHandle(job, rec, h.lock_key, record_key, result.token)
            self.runs[run_id] = nxt  # before the lock could be seen without its run
            self.stats["won"] += 1
            self.stats["handovers"] += 1
            self._spawn(self._execute(nxt, fire_ms))

        return req, handed

    def _output_sink(self, h: RunHandle) -> OutputSink:
        assert self.client is not None
        cfg = self.cfg
        log_file = cfg.log_dir / h.job.name / f"{h.run_id}.log" if cfg.log_dir else None
        return EtcdOutput(
            self.client,
            self.ks,
            h.job.name,
            h.run_id,
            limit=run_output_limit(h.job.output_limit, cfg.output_limit, cfg.max_output_limit),
            chunk_size=cfg.output_chunk_size,
            flush_interval=cfg.output_flush_interval,
            tail=cfg.output_tail,
            log_file=log_file,
            log_file_max=cfg.log_file_max,
            spent=lambda: self.budget.spent,
        )

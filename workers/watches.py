"""What the worker's watches do with what they see.

One list-watch per prefix (``scheduler.etcd.listwatch``) feeds one handler:

- ``jobs/`` — the job table; a changed job gets its next fire time, a job that
  arrives after a manual-run request for it runs that request;
- ``ticks/`` — the tick fences seen (a fence ahead of cluster time is repaired);
- ``workers/``, ``masters/`` — the peers and their clocks (cluster time);
- ``killer/``, ``replace/`` — requests to stop a run held here;
- ``trigger/`` — manual-run requests, kept until consumed.

``all_loaded`` is set once jobs, ticks and workers were listed; after a re-list
of the job table (a reconnect, a compaction) the latest missed tick of each
job is caught up if it is still within its deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import structlog

from scheduler.config import WorkerConfig
from scheduler.etcd.client import EtcdClient, EtcdError, KeyValue
from scheduler.etcd.listwatch import Batch, EventKind, ListWatch, Snapshot
from scheduler.keyspace import Keyspace
from scheduler.model import Concurrency, JobSpec
from scheduler.runs import from_ms, tick_ms
from workers.claimer import Claimer
from workers.cluster_time import ClusterClock
from workers.executor import StopReason
from workers.metrics import WorkerMetrics
from workers.pace import MAX_CLAIM_AHEAD
from workers.refusals import Refusals
from workers.repair import Repairs
from workers.runset import RunSet
from workers.standing import Standing
from workers.state import JobTable, PeerView, TickView
from workers.tasks import Tasks
from workers.timer import Timer

Handler = Callable[[Snapshot | Batch], Awaitable[None] | None]


class Watches:
    def __init__(
        self,
        client: EtcdClient,
        cfg: WorkerConfig,
        ks: Keyspace,
        *,
        clock: ClusterClock,
        table: JobTable,
        ticks: TickView,
        peers: PeerView,
        timer: Timer,
        runs: RunSet,
        standing: Standing,
        claimer: Claimer,
        refusals: Refusals,
        repairs: Repairs,
        tasks: Tasks,
        metrics: WorkerMetrics,
        ready: asyncio.Event,
        wake: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.ks = ks
        self.clock = clock
        self.table = table
        self.ticks = ticks
        self.peers = peers
        self.timer = timer
        self.runs = runs
        self.standing = standing
        self.claimer = claimer
        self.refusals = refusals
        self.repairs = repairs
        self.tasks = tasks
        self.metrics = metrics
        self.ready = ready
        """Set by the worker once it may claim: from then on a re-list catches up."""
        self.wake = wake
        """Set when the timer loop must look again (a job changed, a drain began)."""
        self.log = log
        self.all_loaded = asyncio.Event()
        self._loaded: set[str] = set()

    def loaded(self) -> bool:
        return self.all_loaded.is_set()

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        ks = self.ks
        return [
            self._follow(ks.jobs, self._on_jobs),
            self._follow(ks.ticks, self._on_ticks),
            self._follow(ks.workers, self._on_workers),
            self._follow(ks.masters, self._on_masters),
            self._follow(ks.killers, self._on_killers),
            self._follow(ks.replacements, self._on_replacements),
            self._follow(ks.triggers, self._on_triggers),
        ]

    async def _follow(self, prefix: str, handler: Handler) -> None:
        async for item in ListWatch(self.client, prefix):
            result = handler(item)
            if result is not None:
                await result
            if isinstance(item, Snapshot):
                self._loaded.add(prefix)
                if {self.ks.jobs, self.ks.ticks, self.ks.workers} <= self._loaded:
                    self.all_loaded.set()

    def catch_up_all(self) -> None:
        now_ms = int(self.clock.time() * 1000)
        for spec in self.table.jobs.values():
            self._catch_up(spec, now_ms)

    def _catch_up(self, job: JobSpec, now_ms: int) -> None:
        """After a start or re-list: the latest tick missed by everyone, if within its deadline."""
        last = self.ticks.ticks.get(job.name)
        if last is None or job.suspend:
            return
        latest = job.schedule_obj().latest_at_or_before(from_ms(now_ms), job.zone())
        if latest is not None and tick_ms(latest) > last:
            self.claimer.start_tick(job, tick_ms(latest))

    # jobs, ticks ----------------------------------------------------------

    def _on_jobs(self, item: Snapshot | Batch) -> None:
        now_ms = int(self.clock.time() * 1000)
        changes = self.table.apply(item)
        if self.table.new_refusals:
            records = self.refusals.report(self.table)
            if records:
                self.tasks.background(self.refusals.write(self.client, records))
        for name, spec in changes:
            if spec is None:
                self.timer.remove(name)
                self.metrics.forget(name)
                continue
            nxt = spec.schedule_obj().next_after(from_ms(now_ms), spec.zone())
            self.timer.schedule(name, tick_ms(nxt))
            if isinstance(item, Snapshot) and self.ready.is_set():
                self._catch_up(spec, now_ms)
            prefix = self.ks.triggers + name + "/"
            for key in [k for k in self.claimer.pending if k.startswith(prefix)]:
                self.claimer.start_manual(key)
        self.wake.set()

    def _on_ticks(self, item: Snapshot | Batch) -> None:
        self.check_fences(self.ticks.apply(item))

    def check_fences(self, names: Iterable[str]) -> None:
        """Repair the fences of ``names`` that run ahead of cluster time."""
        if not self.standing.clock_ok():
            return  # only a worker with a good clock judges what is in the future
        limit = int(self.clock.time() * 1000) + self._fence_tolerance_ms()
        for name in names:
            if self.ticks.ticks[name] > limit and name not in self.repairs.running:
                self.tasks.background(self._repair_fence(name, self.ticks.kvs[name]))

    def _fence_tolerance_ms(self) -> int:
        """How far ahead of cluster time a legitimate claim can put a fence: the
        longest claim-ahead, two clocks at the skew bound, and a second more."""
        return int(1000 * (MAX_CLAIM_AHEAD + 2 * self.cfg.max_clock_skew + 1.0))

    async def _repair_fence(self, name: str, kv: KeyValue) -> None:
        self.repairs.running.add(name)
        try:
            limit = int(self.clock.time() * 1000) + self._fence_tolerance_ms()
            await self.repairs.fence(name, kv, limit)
        except EtcdError as exc:
            self.log.warning("fence repair failed", job=name, error=str(exc))
        finally:
            self.repairs.running.discard(name)

    # peers and cluster time -----------------------------------------------

    def _on_workers(self, item: Snapshot | Batch) -> None:
        self.peers.apply(item)
        self._update_clock()

    def _on_masters(self, item: Snapshot | Batch) -> None:
        self.peers.apply_masters(item)
        self._update_clock()

    def _update_clock(self) -> None:
        """Re-estimate the offset from the peers' clocks (``workers.cluster_time``)."""
        clock = self.clock
        was_ok, was_known = self.standing.clock_ok(), clock.known
        est = self.peers.estimator.estimate()
        others = self.peers.others()
        if est is not None and (clock.known or est[1] >= others):
            # the first estimate waits for a sample of every live peer: a median
            # of our own clock and one other cannot tell which of the two is wrong
            clock.offset, clock.known = est[0], True
        elif self.peers.alone():
            clock.known = True  # alone: our clock is the cluster's
        ok = self.standing.clock_ok()
        if ok != was_ok:
            log = self.log.info if ok else self.log.warning
            log(
                "clock within the bound, claiming" if ok else "clock skew above the bound",
                skew=round(self.standing.skew, 3),
                bound=self.cfg.max_clock_skew,
                known=clock.known,
            )
        if ok and not was_ok:
            self.check_fences(list(self.ticks.ticks))  # written while we could not judge
        if clock.known and not was_known and self.ready.is_set():
            self.catch_up_all()

    # requests -------------------------------------------------------------

    def _on_killers(self, item: Snapshot | Batch) -> None:
        """Kill requests (written by masters only): stop the job's runs here."""
        self._stop_requested(item, self.ks.killers, replace_only=False)

    def _on_replacements(self, item: Snapshot | Batch) -> None:
        """A worker replacing a run (``concurrency: replace``) asks its holder to stop.

        Workers may write these, so they are honoured for ``replace`` jobs only (as
        this worker's signed-off definition says), and only for the named run: a
        worker's credentials cannot stop other runs (docs/security.md)."""
        self._stop_requested(item, self.ks.replacements, replace_only=True)

    def _stop_requested(self, item: Snapshot | Batch, prefix: str, *, replace_only: bool) -> None:
        if isinstance(item, Snapshot):
            return  # only requests made while we watch count
        for ev in item.events:
            if ev.kind is not EventKind.PUT:
                continue
            name = ev.key[len(prefix) :]
            try:
                run_id = json.loads(ev.kv.value or b"{}").get("run_id")
            except (ValueError, AttributeError):
                run_id = None
            if replace_only and not run_id:
                continue
            for h in self.runs.of_job(name):
                if run_id not in (None, h.run_id):
                    continue
                if replace_only and h.job.concurrency is not Concurrency.REPLACE:
                    self.log.warning("replace request for a job that is not replace", job=name)
                    continue
                what = "replacement requested" if replace_only else "kill requested"
                self.log.info(what, job=name, run=h.run_id)
                h.stop(StopReason.KILLED)

    def _on_triggers(self, item: Snapshot | Batch) -> None:
        """Manual-run requests: remember them until consumed, so a request that
        arrives before its job definition still runs once the job is known."""
        pending = self.claimer.pending
        if isinstance(item, Snapshot):
            pending.clear()
            pending.update(item.kvs)
            fresh = set(item.kvs)
        else:
            fresh = set()
            for ev in item.events:
                if ev.kind is EventKind.PUT:
                    pending.add(ev.key)
                    fresh.add(ev.key)
                else:
                    pending.discard(ev.key)
        for key in fresh:
            self.claimer.start_manual(key)

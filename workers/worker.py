"""The worker daemon: watches jobs, fires ticks, claims them, runs them.

Lifecycle is apart from signals: ``start()`` returns once the worker holds a
session and has loaded the job table; ``stop()`` drains (invariant I5);
``kill()`` is the second-signal path. Only :mod:`workers.daemon` installs
signal handlers.

Every long-running loop runs in one ``TaskGroup``: a loop that dies takes the
worker down loudly instead of going silent.

The worker is built from parts that share its state (:mod:`workers.core`):
:mod:`workers.membership` (session lease, registration), :mod:`workers.claiming`
(from a due tick to a started run) and this module (lifecycle, the watches that
feed the tables, the timer loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterable

from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.client import EtcdError, KeyValue
from scheduler.etcd.connect import connect_patiently
from scheduler.etcd.listwatch import Batch, EventKind, ListWatch, Snapshot
from scheduler.model import Concurrency, JobSpec
from scheduler.run_requests import StopRequest
from scheduler.runs import from_ms, tick_ms
from workers.claiming import Claiming
from workers.executor import StopReason
from workers.health_http import HealthServer
from workers.membership import Membership
from workers.pace import MAX_CLAIM_AHEAD
from workers.repair import Repairs
from workers.spawn import seal_inherited_fds

MAX_SLEEP = 30.0


def _use_pidfd_child_watcher() -> None:
    """Python 3.11's default child watcher starts a thread per child; a pidfd
    watcher costs nothing per child (it is the default from Python 3.12 on)."""
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher"):
        return
    current = asyncio.get_child_watcher()
    if isinstance(current, asyncio.PidfdChildWatcher):
        return
    try:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
    except (OSError, RuntimeError):
        return  # no pidfd_open (old kernel): keep the default
    asyncio.set_child_watcher(watcher)


class Worker(Membership, Claiming):
    """``etcron worker``: see the module docstring."""

    # lifecycle ------------------------------------------------------------

    async def start(self, timeout: float | None = 30.0) -> None:
        """Connect, take a session, load the tables; return when claiming can begin."""
        self._main = asyncio.create_task(self._run(), name=f"worker-{self.id}")
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._main}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if self._main in done:
            ready.cancel()
            self._main.result()
            raise RuntimeError("worker stopped during start")
        if ready not in done:
            ready.cancel()
            self.kill()
            with contextlib.suppress(Exception):
                await self.wait()
            raise TimeoutError("worker did not become ready")

    async def wait(self) -> None:
        if self._main is not None:
            await self._main

    async def stop(self, grace: float | None = None) -> None:
        """Drain: no new claims; running jobs finish (or are killed after ``grace``)."""
        grace = self.cfg.drain_grace if grace is None else grace
        self.draining = True
        self._wake.set()
        self.log.info("draining", running=len(self.runs), grace=grace)
        with contextlib.suppress(EtcdError):
            async with asyncio.timeout(2):
                await self._register()  # tell peers: rank me last from now on
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self.runs and self._tasks:
                    await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)
        for h in list(self.runs.values()):
            h.stop(StopReason.DRAIN)
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        self._stop.set()
        await self.wait()

    def kill(self) -> None:
        """Second signal: kill every child process group now and stop (``wait()`` for the end)."""
        for h in list(self.runs.values()):
            h.stop(StopReason.KILLED, now=True)
        self.draining = True
        self._stop.set()

    # main -----------------------------------------------------------------

    async def _run(self) -> None:
        _use_pidfd_child_watcher()
        seal_inherited_fds()
        if self.cfg.listen:  # before etcd: /healthz answers while it is down
            self.http = HealthServer(
                self.cfg.listen, metrics=self.metrics.render, readiness=self.readiness
            )
            await self.http.start()
        try:
            await self._run_connected()
        finally:
            if self.http is not None:
                await self.http.close()

    async def _run_connected(self) -> None:
        client = await connect_patiently(self.config.etcd, stop=self._stop, what="worker")
        if client is None:
            return  # stopped while waiting for etcd
        client.observe = self.metrics.etcd.observe
        self.client = client
        self.batcher = TxnBatcher(self.client)
        self.repairs = Repairs(client, self.ks, self.id, self.clock)
        await self.guard.start()
        try:
            async with asyncio.TaskGroup() as tg:
                loops = [
                    self._session_loop(),
                    self._follow(self.ks.jobs, self._on_jobs),
                    self._follow(self.ks.ticks, self._on_ticks),
                    self._follow(self.ks.workers, self._on_workers),
                    self._follow(self.ks.masters, self._on_masters),
                    self._follow(self.ks.killers, self._on_killers),
                    self._follow(self.ks.replacements, self._on_replacements),
                    self._follow(self.ks.triggers, self._on_triggers),
                    self._timer_loop(),
                    self._register_loop(),
                    self.guard.supervise(),
                    self.budget.follow(client, self.ks.budget),
                ]
                tasks = [tg.create_task(c) for c in loops]
                await self._stop.wait()
                for t in tasks:
                    t.cancel()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for t in self._tasks | self._background:
            t.cancel()
        if self._tasks:
            # a cancelled run still writes its final record and releases its lock
            # (workers/runner.py): let it, before the session and the client go
            # (bounded: its last output gets runner.FLUSH_TIMEOUT, 10 s, then the release)
            await asyncio.wait(list(self._tasks), timeout=15.0)
        session, self.session = self.session, None
        if session is not None:
            await session.close(revoke=True)
        await self.guard.close()
        if self.batcher is not None:
            self.stats["etcd_requests"] = self.batcher.sent
            await self.batcher.close()
        if self.client is not None:
            await self.client.close()
        self.log.info("stopped", stats=self.stats)

    async def _follow(
        self, prefix: str, handler: Callable[[Snapshot | Batch], Awaitable[None] | None]
    ) -> None:
        assert self.client is not None
        async for item in ListWatch(self.client, prefix):
            result = handler(item)
            if result is not None:
                await result
            if isinstance(item, Snapshot):
                self._loaded.add(prefix)
                self._check_ready()

    def _check_ready(self) -> None:
        needed = {self.ks.jobs, self.ks.ticks, self.ks.workers}
        if needed <= self._loaded and self._session_ready.is_set() and not self.ready.is_set():
            self.ready.set()
            self.log.info("ready", jobs=len(self.table.jobs), revision=self.table.revision)
            now_ms = int(self.clock.time() * 1000)
            for spec in self.table.jobs.values():
                self._catch_up(spec, now_ms)

    # watches --------------------------------------------------------------

    def _on_jobs(self, item: Snapshot | Batch) -> None:
        now_ms = int(self.clock.time() * 1000)
        changes = self.table.apply(item)
        if self.table.new_refusals:
            records = self.refusals.report(self.table)
            if records and self.client is not None:
                self._background_task(self.refusals.write(self.client, records))
        for name, spec in changes:
            if spec is None:
                self.timer.remove(name)
                self.metrics.forget(name)
                continue
            nxt = spec.schedule_obj().next_after(from_ms(now_ms), spec.zone())
            self.timer.schedule(name, tick_ms(nxt))
            if isinstance(item, Snapshot) and self.ready.is_set():
                self._catch_up(spec, now_ms)
            for key in [k for k in self.triggers if k.startswith(self.ks.triggers + name + "/")]:
                self._start_manual(key)
        self._wake.set()

    def _catch_up(self, job: JobSpec, now_ms: int) -> None:
        """After a start or re-list: the latest tick missed by everyone, if within its deadline."""
        last = self.ticks.ticks.get(job.name)
        if last is None or job.suspend:
            return
        latest = job.schedule_obj().latest_at_or_before(from_ms(now_ms), job.zone())
        if latest is not None and tick_ms(latest) > last:
            self._spawn(self._tick(job, tick_ms(latest)))

    def _on_ticks(self, item: Snapshot | Batch) -> None:
        self._check_fences(self.ticks.apply(item))

    def _check_fences(self, names: Iterable[str]) -> None:
        """Repair the fences of ``names`` that run ahead of cluster time."""
        if not self.clock_ok() or self.repairs is None:
            return  # only a worker with a good clock judges what is in the future
        limit = int(self.clock.time() * 1000) + self._fence_tolerance_ms()
        for name in names:
            if self.ticks.ticks[name] > limit and name not in self._repairing:
                self._background_task(self._repair_fence(name, self.ticks.kvs[name]))

    def _fence_tolerance_ms(self) -> int:
        """How far ahead of cluster time a legitimate claim can put a fence: the
        longest claim-ahead, two clocks at the skew bound, and a second more."""
        return int(1000 * (MAX_CLAIM_AHEAD + 2 * self.cfg.max_clock_skew + 1.0))

    async def _repair_fence(self, name: str, kv: KeyValue) -> None:
        assert self.repairs is not None
        self._repairing.add(name)
        try:
            limit = int(self.clock.time() * 1000) + self._fence_tolerance_ms()
            await self.repairs.fence(name, kv, limit)
        except EtcdError as exc:
            self.log.warning("fence repair failed", job=name, error=str(exc))
        finally:
            self._repairing.discard(name)

    def _on_workers(self, item: Snapshot | Batch) -> None:
        self.peers.apply(item)
        self._update_clock()

    def _on_masters(self, item: Snapshot | Batch) -> None:
        self.peers.apply_masters(item)
        self._update_clock()

    def _update_clock(self) -> None:
        """Re-estimate the offset from the peers' clocks (``workers.cluster_time``)."""
        was_ok, was_known = self.clock_ok(), self.clock.known
        est = self.peers.estimator.estimate()
        others = self.peers.others()
        if est is not None and (self.clock.known or est[1] >= others):
            # the first estimate waits for a sample of every live peer: a median
            # of our own clock and one other cannot tell which of the two is wrong
            self.clock.offset, self.clock.known = est[0], True
        elif self.peers.alone():
            self.clock.known = True  # alone: our clock is the cluster's
        ok = self.clock_ok()
        if ok != was_ok:
            log = self.log.info if ok else self.log.warning
            log(
                "clock within the bound, claiming" if ok else "clock skew above the bound",
                skew=round(self.skew, 3),
                bound=self.cfg.max_clock_skew,
                known=self.clock.known,
            )
        if ok and not was_ok:
            self._check_fences(list(self.ticks.ticks))  # written while we could not judge
        if self.clock.known and not was_known and self.ready.is_set():
            now_ms = int(self.clock.time() * 1000)
            for spec in self.table.jobs.values():
                self._catch_up(spec, now_ms)

    def _on_killers(self, item: Snapshot | Batch) -> None:
        """Kill requests (written by masters only): stop the job's runs here."""
        self._stop_requested(item, self.ks.killers, StopReason.KILLED, replace_only=False)

    def _on_replacements(self, item: Snapshot | Batch) -> None:
        """A worker replacing a run (``concurrency: replace``) asks its holder to stop.

        Workers may write these, so they are honoured for ``replace`` jobs only (as
        this worker's signed-off definition says), and only for the named run: a
        worker's credentials cannot stop other runs (docs/security.md)."""
        self._stop_requested(item, self.ks.replacements, StopReason.KILLED, replace_only=True)

    def _stop_requested(
        self, item: Snapshot | Batch, prefix: str, reason: StopReason, *, replace_only: bool
    ) -> None:
        if isinstance(item, Snapshot):
            return  # only requests made while we watch count
        for ev in item.events:
            if ev.kind is not EventKind.PUT:
                continue
            name = self.ks.tail(ev.key, prefix)
            req = StopRequest.parse(ev.kv.value or b"{}")
            run_id = req.run_id if req is not None else None
            if replace_only and not run_id:
                continue
            for h in list(self.runs.values()):
                if h.job.name != name or run_id not in (None, h.run_id):
                    continue
                if replace_only and h.job.concurrency is not Concurrency.REPLACE:
                    self.log.warning("replace request for a job that is not replace", job=name)
                    continue
                what = "replacement requested" if replace_only else "kill requested"
                self.log.info(what, job=name, run=h.run_id)
                h.stop(reason)

    def _on_triggers(self, item: Snapshot | Batch) -> None:
        """Manual-run requests: remember them until consumed, so a request that
        arrives before its job definition still runs once the job is known."""
        if isinstance(item, Snapshot):
            self.triggers = set(item.kvs)
            fresh = set(item.kvs)
        else:
            fresh = set()
            for ev in item.events:
                if ev.kind is EventKind.PUT:
                    self.triggers.add(ev.key)
                    fresh.add(ev.key)
                else:
                    self.triggers.discard(ev.key)
        for key in fresh:
            self._start_manual(key)

    def _start_manual(self, key: str) -> None:
        try:
            name, request = self.ks.parse_trigger(key)
        except ValueError:
            return  # not a request's key: nothing to run
        job = self.table.jobs.get(name)
        if job is not None:
            self._spawn(self._manual(job, key, request))

    # timer ----------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            ahead = self.pace.ahead_ms
            now_ms = int(self.clock.time() * 1000)
            for name, fire in self.timer.pop_due(now_ms + ahead):
                job = self.table.jobs.get(name)
                if job is None:
                    continue
                nxt = job.schedule_obj().next_after(from_ms(max(fire, now_ms)), job.zone())
                self.timer.schedule(name, tick_ms(nxt))
                self._due(job, fire)
            nxt_ms = self.timer.next_fire_ms()
            sleep = (
                MAX_SLEEP if nxt_ms is None else min(MAX_SLEEP, (nxt_ms - ahead - now_ms) / 1000)
            )
            self._wake.clear()
            if sleep > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await self._wake.wait()

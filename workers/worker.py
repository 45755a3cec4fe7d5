"""The worker daemon: watches jobs, fires ticks, claims them, runs them.

Lifecycle is apart from signals: ``start()`` returns once the worker holds a
session and has loaded the job table; ``stop()`` drains (invariant I5);
``kill()`` is the second-signal path. Only :mod:`workers.daemon` installs
signal handlers.

Every long-running loop runs in one ``TaskGroup``: a loop that dies takes the
worker down loudly instead of going silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

import structlog

from scheduler import __version__
from scheduler.clock import Clock, OffsetClock
from scheduler.config import Config
from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.claim import ClaimRequest, Outcome, TickFence, TriggerFence, acquire, claim
from scheduler.etcd.client import EtcdClient, EtcdError, EtcdUnavailable, cmp_created, op_put
from scheduler.etcd.listwatch import Batch, EventKind, ListWatch, Snapshot
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace
from scheduler.model import Concurrency, JobSpec
from scheduler.runs import LockValue, RunRecord, RunStatus, from_ms, new_run_id, tick_ms
from workers.executor import OutputSink, StopReason
from workers.guardclient import Guard
from workers.launch import Launcher
from workers.output import EtcdOutput, prune_local_logs
from workers.peers import rank
from workers.runner import RunHandle, Runner, started_record
from workers.spawn import seal_inherited_fds
from workers.state import JobTable, PeerView, TickView
from workers.timer import Timer

log = structlog.get_logger("etcron.worker")

MAX_SLEEP = 30.0


def _skip_record(rec: RunRecord) -> bytes:
    """The record a ``forbid`` tick gets when its previous run is still active."""
    return rec.model_copy(
        update={
            "status": RunStatus.SKIPPED,
            "start": None,
            "message": "previous run still active (concurrency: forbid)",
        }
    ).to_json()


class WorkerIdInUse(Exception):
    pass


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


class Worker:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.cfg = config.worker
        self.id = self.cfg.id
        self.ks = Keyspace(config.etcd.prefix)
        if clock is None:
            clock = OffsetClock(self.cfg.clock_offset) if self.cfg.clock_offset else Clock()
        self.clock = clock
        self.table = JobTable(self.ks.jobs)
        self.ticks = TickView(self.ks.ticks)
        self.peers = PeerView(self.ks.workers)
        self.timer = Timer()
        self.launcher = Launcher(self.clock)
        self._runner: Runner | None = None
        self.runs: dict[str, RunHandle] = {}
        self.session: Session | None = None
        self.client: EtcdClient | None = None
        self.batcher: TxnBatcher | None = None
        self.guard = Guard(config.etcd)
        self.draining = False
        self.skew = 0.0
        self.ready = asyncio.Event()
        self._loaded: set[str] = set()
        self.triggers: set[str] = set()
        self._old_leases: set[int] = set()
        self._claiming = 0  # claims in flight count against capacity
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._session_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self.log = log.bind(worker=self.id)
        self.stats = {"claims": 0, "txns": 0, "won": 0, "taken": 0, "seen_taken": 0, "busy": 0}
        self.stats |= {"missed": 0, "started": 0}

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
        self.client = await EtcdClient.connect(self.config.etcd)
        self.batcher = TxnBatcher(self.client)
        await self.guard.start()
        try:
            async with asyncio.TaskGroup() as tg:
                loops = [
                    self._session_loop(),
                    self._follow(self.ks.jobs, self._on_jobs),
                    self._follow(self.ks.ticks, self._on_ticks),
                    self._follow(self.ks.workers, self._on_workers),
                    self._follow(self.ks.killers, self._on_killers),
                    self._follow(self.ks.triggers, self._on_triggers),
                    self._timer_loop(),
                    self._register_loop(),
                    self.guard.supervise(),
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

    # session --------------------------------------------------------------

    def lease_left(self) -> float:
        return self.session.remaining() if self.session is not None else 0.0

    async def _session_loop(self) -> None:
        assert self.client is not None
        delay = 0.2
        while True:
            try:
                session = Session(
                    self.client,
                    ttl=self.cfg.lease_ttl,
                    margin=self.cfg.lease_margin,
                    clock=self.clock,
                )
                session.on_renew.append(lambda d: self.guard.deadline(d - self.cfg.lease_margin))
                await session.start()
                self.guard.lease(session.lease_id)
                self.session = session
                self._old_leases.add(session.lease_id)
                await self._register(create=True)
            except EtcdUnavailable as exc:
                self.log.warning("no session, retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            self._session_ready.set()
            self._check_ready()
            await session.lost.wait()
            self.session = None
            self._session_ready.clear()
            await session.close(revoke=False)
            task = asyncio.create_task(self._revoke_later(session.lease_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            lost = list(self.runs.values())
            for h in lost:
                h.stop(StopReason.LOST, now=True)
            self.log.error("lease lost: stopped claiming, killed running jobs", runs=len(lost))

    async def _revoke_later(self, lease_id: int) -> None:
        """A lost session's lease may still live in etcd (a partition, a quorum
        loss): once etcd answers, revoke it, so its stale locks go at once."""
        assert self.client is not None
        for delay in (0.5, 1, 2, 4, 8, 8, 8):
            await asyncio.sleep(delay)
            with contextlib.suppress(EtcdError):
                await self.client.revoke(lease_id)
                return

    def _registration(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "labels": self.cfg.labels,
                "capacity": self.cfg.capacity,
                "running": len(self.runs),
                "version": __version__,
                "clock": self.clock.time(),
                "skew": round(self.skew, 4),
                "draining": self.draining,
                "jobs": len(self.table.jobs),
                "revision": self.table.revision,
                "lease": self.session.lease_id if self.session else 0,
            }
        ).encode()

    async def _register(self, *, create: bool = False) -> None:
        session, client = self.session, self.client
        if session is None or client is None:
            return
        key = self.ks.worker(self.id)
        if create:
            res = await client.txn(
                [cmp_created(key, 0)], [op_put(key, self._registration(), lease=session.lease_id)]
            )
            if not res.succeeded:
                kv, _ = await client.get(key)
                if kv is not None and kv.lease in self._old_leases - {session.lease_id}:
                    # our own registration from a session we gave up (etcd renews
                    # every lease when it regains quorum): end that lease for good
                    await client.revoke(kv.lease)
                elif kv is not None and kv.lease != session.lease_id:
                    raise WorkerIdInUse(
                        f"worker id {self.id!r} is registered by another live worker"
                    )
            else:
                return
        await client.put(key, self._registration(), lease=session.lease_id)

    async def _register_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            self.skew = self.peers.skew(self.id, self.clock.time())
            if abs(self.skew) > self.cfg.max_clock_skew:
                self.log.warning(
                    "clock skew above the bound",
                    skew=round(self.skew, 3),
                    bound=self.cfg.max_clock_skew,
                    claiming=not self.cfg.stop_claiming_on_skew,
                )
            with contextlib.suppress(EtcdError):
                await self._register()

    # watches --------------------------------------------------------------

    def _on_jobs(self, item: Snapshot | Batch) -> None:
        now_ms = int(self.clock.time() * 1000)
        for name, spec in self.table.apply(item):
            if spec is None:
                self.timer.remove(name)
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
        self.ticks.apply(item)

    def _on_workers(self, item: Snapshot | Batch) -> None:
        self.peers.apply(item, self.clock.time())

    def _on_killers(self, item: Snapshot | Batch) -> None:
        if isinstance(item, Snapshot):
            return  # only requests made while we watch count
        for ev in item.events:
            if ev.kind is not EventKind.PUT:
                continue
            name = ev.key[len(self.ks.killers) :]
            try:
                run_id = json.loads(ev.kv.value or b"{}").get("run_id")
            except ValueError:
                run_id = None
            for h in list(self.runs.values()):
                if h.job.name == name and run_id in (None, h.run_id):
                    self.log.info("kill requested", job=name, run=h.run_id)
                    h.stop(StopReason.KILLED)

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
        name, _, request = key[len(self.ks.triggers) :].partition("/")
        job = self.table.jobs.get(name)
        if job is not None and request:
            self._spawn(self._manual(job, key, request))

    # timer ----------------------------------------------------------------

    async def _timer_loop(self) -> None:
        ahead = int(self.cfg.claim_ahead * 1000)
        while True:
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("run task failed", error=repr(task.exception()))

    # claiming -------------------------------------------------------------

    def _may_claim(self, job: JobSpec) -> bool:
        """Eligible for this job now (capacity and the session are checked apart:
        see ``_tick``; a tick waits through an etcd outage until its deadline)."""
        if self.draining or job.suspend:
            return False
        if self.cfg.stop_claiming_on_skew and abs(self.skew) > self.cfg.max_clock_skew:
            return False
        return all(self.cfg.labels.get(k) == v for k, v in job.selector.items())

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
            return
        peers = self.peers.list()
        turn = rank(self.id, peers, job.name, fire_ms, job.selector)
        if self._full():
            # let every other worker have its turn first; if nobody took the
            # tick, leave a trace instead of dropping it silently
            turn = max(turn, len(peers)) + 1
        ahead = int(self.cfg.claim_ahead * 1000)
        at_ms = fire_ms - ahead + int(turn * self.cfg.handoff_delay * 1000)
        delay = at_ms / 1000 - self.clock.time()
        if delay <= 0:
            self._spawn(self._tick(job, fire_ms))
        else:
            asyncio.get_running_loop().call_later(delay, self._turn, job.name, fire_ms)

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
            if tick_ms(nxt) <= now_ms:
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
                busy = await self._claim_and_run(
                    job, TickFence(self.ks.tick(job.name), fire_ms), tick, early=early
                )
                if not (busy and early):
                    return
                await self._sleep_until(fire_ms)  # the run may end before the tick: ask again then
                continue
            except EtcdUnavailable as exc:
                self.log.warning("claim failed, retrying", job=job.name, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _manual(self, job: JobSpec, trigger_key: str, request: str) -> None:
        """A manual run (even of a suspended job) on an eligible worker."""
        if not all(self.cfg.labels.get(k) == v for k, v in job.selector.items()):
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
                await self._claim_and_run(
                    job, TriggerFence(trigger_key), self.clock.now(), manual=True
                )
                return
            except EtcdUnavailable:
                await asyncio.sleep(0.5)

    async def _record_missed(
        self,
        job: JobSpec,
        fire_ms: int,
        why: str = "no worker could start this tick within its starting deadline",
    ) -> None:
        assert self.client is not None
        tick = from_ms(fire_ms)
        rec = RunRecord(
            job=job.name,
            run_id=new_run_id(tick),
            tick=tick,
            status=RunStatus.MISSED,
            worker=self.id,
            message=why,
        )
        req = ClaimRequest(
            TickFence(self.ks.tick(job.name), fire_ms),
            None,
            b"",
            0,
            rec.run_id,
            self.ks.run(job.name, rec.run_id),
            rec.to_json(),
            None,
        )
        with contextlib.suppress(EtcdUnavailable):
            c = await claim(self.batcher or self.client, req)
            if c.outcome is Outcome.WON:
                self.stats["missed"] += 1
                self.log.warning("tick missed", job=job.name, tick=str(tick), reason=why)

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
        early: bool = False,
    ) -> bool:
        """Claim and, if won, run (a scheduled tick starts at the tick itself).

        Returns True when the job was busy (``forbid``) and no skip was recorded
        because the claim was early: the caller asks again at the tick.
        """
        session, client = self.session, self.batcher
        if session is None or client is None or session.remaining() <= 0:
            raise EtcdUnavailable("no live session")
        run_id = new_run_id(tick, manual=manual)
        rec = started_record(
            job, run_id, tick, self.id, session.lease_id, max(self.clock.now(), tick), manual=manual
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
        req = ClaimRequest(
            fence,
            None if policy is Concurrency.REPLACE else lock_key,
            lock_value,
            session.lease_id,
            run_id,
            self.ks.run(job.name, run_id),
            rec.to_json(),
            _skip_record(rec) if policy is Concurrency.FORBID and not early else None,
        )
        self.stats["claims"] += 1
        self._claiming += 1
        try:
            result = await claim(client, req)
        finally:
            self._claiming -= 1
        self.stats["txns"] += result.txns
        if result.outcome is Outcome.TAKEN:
            self.stats["taken"] += 1
            return False
        if result.outcome is Outcome.BUSY:
            self.stats["busy"] += 1
            if result.recorded:
                self.log.info(
                    "tick skipped: previous run still active", job=job.name, tick=str(tick)
                )
            return not result.recorded
        token = result.token
        start_at = None if manual else tick_ms(tick)
        if policy is Concurrency.REPLACE:
            if start_at is not None:
                await self._sleep_until(start_at)
            token = await self._replace(job, lock_key, lock_value, session)
            if not token:
                return False
        rec.fencing_token = token
        self.stats["won"] += 1
        handle = RunHandle(job, rec, lock_key, self.ks.run(job.name, run_id), token)
        await self._execute(handle, start_at)
        return False

    async def _replace(self, job: JobSpec, lock_key: str, value: bytes, session: Session) -> int:
        """``replace``: ask the running one to die, then take the lock once it is free."""
        assert self.client is not None
        loop = asyncio.get_running_loop()
        give_up = (
            loop.time() + (job.timeout or 0) + self.cfg.kill_grace + 2 * self.cfg.lease_ttl + 5
        )
        asked = b""
        while loop.time() < give_up and session.remaining() > 0:
            token, holder = await acquire(self.client, lock_key, value, session.lease_id)
            if token:
                return token
            if holder and holder != asked:
                run_id = json.loads(holder).get("run_id")
                await self.client.put(
                    self.ks.killer(job.name), json.dumps({"run_id": run_id}).encode()
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
                lease_left=self.lease_left,
                now=self.clock.now,
                guard_add=self.guard.add,
                guard_remove=self.guard.remove,
                sink_factory=self._output_sink,
                launch=self.launcher.at,
            )
        self.runs[h.run_id] = h
        self.stats["started"] += 1
        try:
            await self._runner.execute(h, start_at_ms)
        finally:
            self.runs.pop(h.run_id, None)
            if self.cfg.log_dir is not None:
                prune_local_logs(self.cfg.log_dir / h.job.name, self.cfg.log_file_count)

    def _output_sink(self, h: RunHandle) -> OutputSink:
        assert self.client is not None
        cfg = self.cfg
        log_file = cfg.log_dir / h.job.name / f"{h.run_id}.log" if cfg.log_dir else None
        return EtcdOutput(
            self.client,
            self.ks,
            h.job.name,
            h.run_id,
            limit=h.job.output_limit or cfg.output_limit,
            chunk_size=cfg.output_chunk_size,
            flush_interval=cfg.output_flush_interval,
            tail=cfg.output_tail,
            log_file=log_file,
            log_file_max=cfg.log_file_max,
        )

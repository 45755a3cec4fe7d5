"""The worker daemon: watches jobs, fires ticks, claims them, runs them.

Lifecycle is apart from signals: ``start()`` returns once the worker holds a
session and has loaded the job table; ``stop()`` drains (invariant I5);
``kill()`` is the second-signal path. Only :mod:`workers.daemon` installs
signal handlers.

The worker is made of parts, each built with what it depends on:

- :class:`workers.membership.Membership` — the session lease and the registration;
- :class:`workers.runset.RunSet` — the runs held and the claims in flight (capacity);
- :class:`workers.claimer.Claimer` — from a due tick or a manual-run request to
  a started run, with :class:`workers.eligibility.Eligibility` (may I claim?),
  :class:`workers.missed.MissedTicks` (records of ticks that did not run),
  :class:`workers.handover.HandOvers` (a release that claims the next tick) and
  :class:`workers.starter.RunStarter` (a won claim becomes a run);
- :class:`workers.standing.Standing` — draining, and the clock against the cluster's;
- :class:`workers.tasks.Tasks` — the claim/run tasks and background bookkeeping.

This class wires them, owns the ``TaskGroup`` of long-running loops (a loop that
dies takes the worker down loudly instead of going silent), the watches that
feed the tables (:mod:`workers.watches`) and the timer loop.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from scheduler.clock import Clock, OffsetClock
from scheduler.config import Config
from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.client import EtcdClient, EtcdError
from scheduler.etcd.connect import connect_patiently
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace
from scheduler.runs import from_ms, tick_ms
from workers.admission import admission_for
from workers.budget import OutputBudget
from workers.claimer import Claimer
from workers.cluster_time import ClusterClock, OffsetEstimator
from workers.eligibility import Eligibility
from workers.executor import StopReason
from workers.guard import Guard
from workers.handover import HandOvers
from workers.health_http import HealthServer
from workers.launch import Launcher
from workers.membership import Membership
from workers.metrics import WorkerMetrics
from workers.missed import MissedTicks
from workers.pace import Pace
from workers.refusals import Refusals
from workers.repair import Repairs
from workers.run_handle import RunHandle
from workers.runset import RunSet
from workers.spawn import seal_inherited_fds, use_pidfd_child_watcher
from workers.standing import Standing
from workers.starter import RunStarter
from workers.state import JobTable, PeerView, TickView
from workers.tasks import Tasks
from workers.timer import Timer
from workers.watches import Watches

MAX_SLEEP = 30.0
SHUTDOWN_GRACE = 15.0
"""Seconds cancelled runs get to write their final record and release their lock
(their last output gets ``runner.FLUSH_TIMEOUT``, 10 s, then the release)."""


class Worker:
    """``etcron worker``: see the module docstring."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.cfg = cfg = config.worker
        self.id = cfg.id
        self.ks = Keyspace(config.etcd.prefix)
        if clock is None:
            clock = OffsetClock(cfg.clock_offset) if cfg.clock_offset else Clock()
        self.host_clock = clock
        """The host's clock: published in the registration, never used to decide."""
        self.clock = ClusterClock(clock)
        """Cluster time (``workers.cluster_time``): every decision reads this."""
        self.admission = admission_for(config)
        """Which job definitions this worker runs: signature, policy (``workers.admission``)."""
        self.log = structlog.get_logger("etcron.worker").bind(worker=self.id)
        self.table = JobTable(self.ks.jobs, self.admission)
        self.ticks = TickView(self.ks.ticks)
        self.peers = PeerView(self.ks.workers, self.ks.masters, OffsetEstimator(self.id, clock))
        self.timer = Timer()
        self.launcher = Launcher(self.clock)
        self.pace = Pace(cfg.claim_ahead)
        """How far ahead of its tick a claim is sent (follows etcd's commit time)."""
        self.budget = OutputBudget()
        """The leader's word on etcd's space (``workers.budget``)."""
        self.guard = Guard(config.etcd)
        self.standing = Standing(cfg, self.clock)
        self.runs = RunSet(cfg.capacity)
        self.tasks = Tasks(self.log)
        self.eligibility = Eligibility(cfg, self.standing, self.peers)
        self.ready = asyncio.Event()
        self.stats = {"claims": 0, "txns": 0, "won": 0, "taken": 0, "seen_taken": 0, "busy": 0}
        self.stats |= {"missed": 0, "started": 0, "handovers": 0}
        self.metrics = WorkerMetrics(self)
        self.refusals = Refusals(self.ks, self.id, cfg.labels, self.metrics, self.clock.now)
        self.http: HealthServer | None = None
        """``/metrics``, ``/healthz``, ``/readyz`` on ``worker.listen`` (``workers.health_http``)."""
        self.membership: Membership | None = None
        self.claimer: Claimer | None = None
        """The parts that need etcd: built once the worker is connected (``_wire``)."""
        self.client: EtcdClient | None = None
        self.batcher: TxnBatcher | None = None
        self.repairs: Repairs | None = None
        self._stop = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self.watches: Watches | None = None
        self._wake = asyncio.Event()
        """Set when the timer loop must look again (a job changed, a drain began)."""

    # state read by /readyz, /metrics and tests ----------------------------

    @property
    def session(self) -> Session | None:
        return self.membership.session if self.membership is not None else None

    @property
    def draining(self) -> bool:
        return self.standing.draining

    @property
    def skew(self) -> float:
        """This host's clock minus cluster time, in seconds."""
        return self.standing.skew

    def clock_ok(self) -> bool:
        return self.standing.clock_ok()

    def lease_left(self) -> float:
        return self.membership.lease_left() if self.membership is not None else 0.0

    def readiness(self) -> str:
        """Why this worker is not ready to claim, or "" when it is (``/readyz``)."""
        if self.standing.draining:
            return "draining"
        if self.lease_left() <= 0:
            return "no etcd session"
        if self.watches is None or not self.watches.loaded():
            return "job table not loaded yet"
        if not self.clock.known:
            return "clock not yet compared with the other workers' clocks"
        if not self.clock_ok():
            bound = self.cfg.max_clock_skew
            return f"clock skew {self.skew:+.3f}s is above worker.max_clock_skew ({bound}s)"
        return ""

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
        self.standing.draining = True
        self._wake.set()
        self.log.info("draining", running=len(self.runs), grace=grace)
        if self.membership is not None:
            with contextlib.suppress(EtcdError, TimeoutError):
                async with asyncio.timeout(2):
                    await self.membership.register()  # tell peers: rank me last from now on
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self.runs and self.tasks.run_tasks:
                    await self.tasks.wait_one_run()
        self.runs.stop_all(StopReason.DRAIN)
        await self.tasks.wait_runs()
        self._stop.set()
        await self.wait()

    def kill(self) -> None:
        """Second signal: kill every child process group now and stop (``wait()`` for the end)."""
        self.runs.stop_all(StopReason.KILLED, now=True)
        self.standing.draining = True
        self._stop.set()

    # main -----------------------------------------------------------------

    async def _run(self) -> None:
        use_pidfd_child_watcher()
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
        membership, watches = self._wire(client)
        await self.guard.start()
        try:
            async with asyncio.TaskGroup() as tg:
                loops = [
                    membership.run(),
                    membership.register_loop(),
                    *watches.loops(),
                    self._become_ready(),
                    self._timer_loop(),
                    self.guard.supervise(),
                    self.budget.follow(client, self.ks.budget),
                ]
                tasks = [tg.create_task(c) for c in loops]
                await self._stop.wait()
                for t in tasks:
                    t.cancel()
        finally:
            await self._shutdown()

    def _wire(self, client: EtcdClient) -> tuple[Membership, Watches]:
        """Build the parts that need etcd (see the module docstring)."""
        cfg, ks = self.cfg, self.ks
        self.client = client
        self.batcher = batcher = TxnBatcher(client)
        self.repairs = repairs = Repairs(client, ks, self.id, self.clock)
        self.membership = membership = Membership(
            client,
            cfg,
            ks,
            clock=self.clock,
            host_clock=self.host_clock,
            guard=self.guard,
            peers=self.peers,
            table=self.table,
            runs=self.runs,
            standing=self.standing,
            tasks=self.tasks,
            repairs=repairs,
            log=self.log,
        )
        missed = MissedTicks(
            client,
            batcher,
            ks,
            self.id,
            clock=self.clock,
            table=self.table,
            ticks=self.ticks,
            eligibility=self.eligibility,
            tasks=self.tasks,
            metrics=self.metrics,
            stats=self.stats,
            stopping=self._stop,
            log=self.log,
        )
        # a run's release may win the next tick (hand-over), whose run the
        # starter then starts: the one cycle between the parts, closed here
        handovers = HandOvers(
            ks,
            self.id,
            clock=self.clock,
            table=self.table,
            ticks=self.ticks,
            pace=self.pace,
            runs=self.runs,
            membership=membership,
            eligibility=self.eligibility,
            missed=missed,
            stats=self.stats,
            stopping=self._stop.is_set,
            start=self._start_handed,
        )
        starter = RunStarter(
            batcher,
            client,
            cfg,
            ks,
            clock=self.clock,
            runs=self.runs,
            guard=self.guard,
            launcher=self.launcher,
            metrics=self.metrics,
            budget=self.budget,
            default_user=self.admission.default_user,
            lease_left=membership.lease_left,
            next_run=handovers.next_run,
            stats=self.stats,
        )
        self.claimer = Claimer(
            client,
            batcher,
            cfg,
            ks,
            clock=self.clock,
            table=self.table,
            ticks=self.ticks,
            peers=self.peers,
            pace=self.pace,
            runs=self.runs,
            membership=membership,
            standing=self.standing,
            eligibility=self.eligibility,
            missed=missed,
            starter=starter,
            tasks=self.tasks,
            repairs=repairs,
            metrics=self.metrics,
            stats=self.stats,
            stopping=self._stop,
            log=self.log,
        )
        self.watches = watches = Watches(
            client,
            cfg,
            ks,
            clock=self.clock,
            table=self.table,
            ticks=self.ticks,
            peers=self.peers,
            timer=self.timer,
            runs=self.runs,
            standing=self.standing,
            claimer=self.claimer,
            refusals=self.refusals,
            repairs=repairs,
            tasks=self.tasks,
            metrics=self.metrics,
            ready=self.ready,
            wake=self._wake,
            log=self.log,
        )
        return membership, watches

    def _start_handed(self, h: RunHandle, fire_ms: int) -> None:
        assert self.claimer is not None
        self.tasks.spawn(self.claimer.starter.execute(h, fire_ms))

    async def _become_ready(self) -> None:
        """Ready once there is a session and the tables are loaded; then catch up."""
        assert self.membership is not None and self.watches is not None
        await self.membership.session_ready.wait()
        await self.watches.all_loaded.wait()
        self.ready.set()
        self.log.info("ready", jobs=len(self.table.jobs), revision=self.table.revision)
        self.watches.catch_up_all()

    async def _shutdown(self) -> None:
        await self.tasks.cancel_all(SHUTDOWN_GRACE)
        membership = self.membership
        session = membership.session if membership is not None else None
        if membership is not None:
            membership.session = None
        if session is not None:
            await session.close(revoke=True)
        await self.guard.close()
        if self.batcher is not None:
            self.stats["etcd_requests"] = self.batcher.sent
            await self.batcher.close()
        if self.client is not None:
            await self.client.close()
        self.log.info("stopped", stats=self.stats)

    # timer ----------------------------------------------------------------

    async def _timer_loop(self) -> None:
        claimer, wake = self.claimer, self._wake
        assert claimer is not None
        while True:
            ahead = self.pace.ahead_ms
            now_ms = int(self.clock.time() * 1000)
            for name, fire in self.timer.pop_due(now_ms + ahead):
                job = self.table.jobs.get(name)
                if job is None:
                    continue
                nxt = job.schedule_obj().next_after(from_ms(max(fire, now_ms)), job.zone())
                self.timer.schedule(name, tick_ms(nxt))
                claimer.due(job, fire)
            nxt_ms = self.timer.next_fire_ms()
            until = None if nxt_ms is None else (nxt_ms - ahead) / 1000
            wake.clear()
            await self.clock.wait(wake, until, cap=MAX_SLEEP)

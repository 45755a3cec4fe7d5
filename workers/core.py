"""The worker's state, shared by its parts (:mod:`workers.membership`,
:mod:`workers.claiming`, :mod:`workers.worker`), and the helpers they all use."""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Coroutine
from typing import Any

import structlog

from scheduler.clock import Clock, OffsetClock
from scheduler.config import Config, ConfigError
from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.client import EtcdClient
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace
from scheduler.signing import Verifier
from workers.admission import Admission
from workers.budget import OutputBudget
from workers.cluster_time import ClusterClock, OffsetEstimator
from workers.credentials import check_credentials
from workers.guard import Guard
from workers.health_http import HealthServer
from workers.launch import Launcher
from workers.metrics import WorkerMetrics
from workers.pace import Pace
from workers.refusals import Refusals
from workers.repair import Repairs
from workers.runner import RunHandle, Runner
from workers.state import JobTable, PeerView, TickView
from workers.timer import Timer

log = structlog.get_logger("etcron.worker")


def admission_for(config: Config) -> Admission:
    """Check the credential files, load the trusted keys and the default user;
    ConfigError (exit 2) for what must change, warnings for what may be a mistake."""
    cfg = config.worker
    check_credentials(config)
    verifier = Verifier.from_files(cfg.trusted_key_files) if cfg.trusted_key_files else None
    admission = Admission(cfg, verifier)
    if verifier is None:
        log.warning(
            "job signing is off: worker.trusted_key_files is empty, so any job written "
            "into etcd runs here",
            worker=cfg.id,
        )
    if admission.default_user is not None:
        try:
            pwd.getpwnam(admission.default_user)
        except KeyError:
            raise ConfigError(
                f"worker.default_user: no user {admission.default_user!r} on this host"
            ) from None
    elif os.geteuid() == 0:
        log.warning("worker.default_user is empty: jobs without a user run as root", worker=cfg.id)
    return admission


class WorkerCore:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.cfg = config.worker
        self.id = self.cfg.id
        self.ks = Keyspace(config.etcd.prefix)
        if clock is None:
            clock = OffsetClock(self.cfg.clock_offset) if self.cfg.clock_offset else Clock()
        self.host_clock = clock
        """The host's clock: published in the registration, never used to decide."""
        self.clock = ClusterClock(clock)
        """Cluster time (``workers.cluster_time``): every decision reads this."""
        self.admission = admission_for(config)
        """Which job definitions this worker runs: signature, policy (``workers.admission``)."""
        self.table = JobTable(self.ks.jobs, self.admission)
        self.ticks = TickView(self.ks.ticks)
        self.peers = PeerView(self.ks.workers, self.ks.masters, OffsetEstimator(self.id, clock))
        self.timer = Timer()
        self.launcher = Launcher(self.clock)
        self._runner: Runner | None = None
        self.runs: dict[str, RunHandle] = {}
        self.session: Session | None = None
        self.client: EtcdClient | None = None
        self.batcher: TxnBatcher | None = None
        self.repairs: Repairs | None = None
        self._repairing: set[str] = set()
        self._no_eligible_warned: dict[str, float] = {}
        self.budget = OutputBudget()
        """The leader's word on etcd's space (``workers.budget``)."""
        self.guard = Guard(config.etcd)
        self.draining = False
        self.ready = asyncio.Event()
        self._loaded: set[str] = set()
        self.triggers: set[str] = set()
        self._old_leases: set[int] = set()
        self._claiming = 0  # claims in flight count against capacity
        self.pace = Pace(self.cfg.claim_ahead)
        """How far ahead of its tick a claim is sent (follows etcd's commit time)."""
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._session_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self.log = log.bind(worker=self.id)
        self.stats = {"claims": 0, "txns": 0, "won": 0, "taken": 0, "seen_taken": 0, "busy": 0}
        self.stats |= {"missed": 0, "started": 0, "handovers": 0}
        self.metrics = WorkerMetrics(self)
        self.refusals = Refusals(self.ks, self.id, self.cfg.labels, self.metrics, self.clock.now)
        self.http: HealthServer | None = None
        """``/metrics``, ``/healthz``, ``/readyz`` on ``worker.listen`` (``workers.health_http``)."""

    @property
    def skew(self) -> float:
        """This host's clock minus cluster time, in seconds."""
        return self.clock.offset

    def clock_ok(self) -> bool:
        """Is this worker's clock known to be within ``max_clock_skew`` of the cluster's?

        Not until it was compared with every live clock (``ClusterClock.known``);
        a worker that is alone takes its own clock as the cluster's.
        """
        if not self.clock.known:
            return False
        return abs(self.clock.offset) <= self.cfg.max_clock_skew

    def readiness(self) -> str:
        """Why this worker is not ready to claim, or "" when it is (``/readyz``)."""
        if self.draining:
            return "draining"
        if self.session is None or self.session.remaining() <= 0:
            return "no etcd session"
        if not {self.ks.jobs, self.ks.ticks, self.ks.workers} <= self._loaded:
            return "job table not loaded yet"
        if not self.clock.known:
            return "clock not yet compared with the other workers' clocks"
        if not self.clock_ok():
            bound = self.cfg.max_clock_skew
            return f"clock skew {self.skew:+.3f}s is above worker.max_clock_skew ({bound}s)"
        return ""

    def lease_left(self) -> float:
        return self.session.remaining() if self.session is not None else 0.0

    def _background_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Bookkeeping that no run waits for (records, repairs): kept, logged if it fails."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", error=repr(task.exception()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("run task failed", error=repr(task.exception()))

    def _check_ready(self) -> None:
        """Set ``ready`` once the session and the tables are there (see Worker)."""
        raise NotImplementedError

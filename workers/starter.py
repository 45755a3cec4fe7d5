"""From a won claim to a running (and finally recorded) run.

:class:`RunStarter` holds the :class:`workers.runner.Runner` built for this
worker's etcd connection and the hooks a run needs: the guard (which kills the
children if this process dies), the orphan registry, the output sink (etcd and
the local log file) and ``next_run`` (the hand-over a run's release may carry,
asked of the claimer). A run is in the run set from its start until its task
ends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from scheduler.config import WorkerConfig
from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from workers import orphans
from workers.budget import OutputBudget
from workers.cgroups import CgroupHost
from workers.cluster_time import ClusterClock
from workers.executor import OutputSink
from workers.guard import Guard
from workers.launch import Launcher
from workers.metrics import WorkerMetrics
from workers.output_sink import EtcdOutput, prune_local_logs, run_output_limit
from workers.run_handle import NextRun, RunHandle
from workers.runner import Runner
from workers.runset import RunSet


class RunStarter:
    def __init__(
        self,
        batcher: TxnBatcher,
        client: EtcdClient,
        cfg: WorkerConfig,
        ks: Keyspace,
        *,
        clock: ClusterClock,
        runs: RunSet,
        guard: Guard,
        launcher: Launcher,
        metrics: WorkerMetrics,
        budget: OutputBudget,
        default_user: str | None,
        lease_left: Callable[[], float],
        next_run: Callable[[RunHandle], NextRun | None],
        stats: dict[str, int],
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.ks = ks
        self.runs = runs
        self.guard = guard
        self.budget = budget
        self.stats = stats
        self.runner = Runner(
            batcher,
            cfg.id,
            kill_grace=cfg.kill_grace,
            allow_run_as=cfg.allow_run_as,
            default_user=default_user,
            lease_left=lease_left,
            now=clock.now,
            guard_add=self._child_started,
            guard_remove=self._child_ended,
            sink_factory=self._output_sink,
            launch=launcher.at,
            next_run=next_run,
            observer=metrics,
            cgroups=functools.partial(CgroupHost.detect, cfg.cgroup_root),
        )

    async def execute(self, h: RunHandle, start_at_ms: int | None) -> None:
        """Run a won claim: prepared now, started at ``start_at_ms`` (None: at once)."""
        self.runs.add(h)  # (a hand-over added it already)
        self.stats["started"] += 1
        orphans.run_started(h.run_id)
        try:
            await self.runner.execute(h, start_at_ms)
        finally:
            orphans.run_ended(h.run_id)
            self.runs.remove(h.run_id)
            if self.cfg.log_dir is not None:
                prune_local_logs(self.cfg.log_dir / h.job.name, self.cfg.log_file_count)

    def _child_started(self, pid: int) -> None:
        self.guard.add(pid)
        orphans.main_started(pid)

    def _child_ended(self, pid: int) -> None:
        orphans.main_ended(pid)
        self.guard.remove(pid)

    def _output_sink(self, h: RunHandle) -> OutputSink:
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

"""A worker's Prometheus metrics (``docs/operations.md`` lists them all).

Hooks, called from the run path, only count: :meth:`WorkerMetrics.run_started`
(from ``Runner``, just before the exec at the tick), :meth:`run_ended` (after
the final record is written), :meth:`missed` and :meth:`skipped` (after a
``missed`` or ``skipped`` record is written). Everything that is state (the
session lease, the clock skew, the runs running, the claims from
``Worker.stats``) is read from the worker when ``/metrics`` is scraped.

Cardinality: the ``job`` label only names jobs in this worker's job table; a
job's series go when its definition is deleted (``forget``), and a run that
ends after its job was deleted is counted in no ``job`` series. So the series
are at most: jobs x 7 statuses (``etcron_runs_total``, only the statuses seen),
jobs x 4 reasons (missed), jobs x 1 reason (skipped), plus a fixed number.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.metrics import EtcdMetrics, new_registry, render

if TYPE_CHECKING:
    from scheduler.config import WorkerConfig
    from workers.cluster_time import ClusterClock
    from workers.runner import RunHandle
    from workers.runset import RunSet
    from workers.state import JobTable

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)

MISSED_REASONS = ("deadline", "capacity", "unclaimed", "no_eligible_worker")
"""Why a tick was recorded ``missed`` (the ``reason`` label)."""
SKIPPED_REASONS = ("previous_running",)
"""Why a tick was recorded ``skipped``: ``concurrency: forbid`` and the previous run active."""


def missed_reason(message: str) -> str:
    """The ``reason`` label of a ``missed`` record's message (``workers.missed``,
    ``workers.accounting``)."""
    if message.startswith("no eligible worker"):
        return "no_eligible_worker"
    if "at capacity" in message:
        return "capacity"
    if message.startswith("no worker claimed"):
        return "unclaimed"
    return "deadline"


class Observed(Protocol):
    """What the metrics read from the worker at a scrape (``workers.worker.Worker``)."""

    cfg: WorkerConfig
    clock: ClusterClock
    table: JobTable
    runs: RunSet
    stats: dict[str, int]

    def lease_left(self) -> float: ...

    def clock_ok(self) -> bool: ...

    def readiness(self) -> str: ...


class WorkerMetrics:
    def __init__(self, worker: Observed) -> None:
        self.worker = worker
        self.registry = new_registry()
        self.etcd = EtcdMetrics(self.registry)
        self.start_lag = Histogram(
            "etcron_run_start_lag_seconds",
            "From a scheduled tick to the exec of its run (cluster time; first attempt)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "etcron_run_duration_seconds",
            "From a run's start to its end (all attempts), by the runs this worker ended",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.runs: Tally[tuple[str, str]] = Tally()
        self.missed_ticks: Tally[tuple[str, str]] = Tally()
        self.skipped_ticks: Tally[tuple[str, str]] = Tally()
        self.refusals: Tally[str] = Tally()
        """Job definitions refused (once per revision), by reason (``workers.admission``)."""
        self.output_bytes = 0
        self.registry.register(_State(self))

    def render(self) -> bytes:
        return render(self.registry)

    # hooks -----------------------------------------------------------------

    def run_started(self, h: RunHandle) -> None:
        """A scheduled run's child is about to be exec'd (at its tick)."""
        h.exec_at = now = self.worker.clock.time()
        self.start_lag.observe(max(0.0, now - h.record.tick.timestamp()))

    def run_ended(self, h: RunHandle) -> None:
        """A run's final record was written (or given up on)."""
        rec = h.record
        started = h.exec_at
        if started is None and rec.start is not None and h.child is not None and h.child.started:
            started = rec.start.timestamp()  # a manual run: started when claimed
        if started is not None and rec.end is not None:
            self.duration.observe(max(0.0, rec.end.timestamp() - started))
        self.output_bytes += rec.output_bytes or 0
        if rec.job in self.worker.table.jobs:
            self.runs[(rec.job, str(rec.status))] += 1

    def missed(self, job: str, message: str, n: int = 1) -> None:
        if n > 0 and job in self.worker.table.jobs:
            self.missed_ticks[(job, missed_reason(message))] += n

    def skipped(self, job: str, reason: str = "previous_running") -> None:
        if job in self.worker.table.jobs:
            self.skipped_ticks[(job, reason)] += 1

    def refused(self, reason: str) -> None:
        self.refusals[reason] += 1

    def forget(self, job: str) -> None:
        """The job's definition is gone: drop its series."""
        for tally in (self.runs, self.missed_ticks, self.skipped_ticks):
            for key in [k for k in tally if k[0] == job]:
                del tally[key]


class _State(Collector):
    """The counters kept as tallies and the gauges, read at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, w = self.m, self.m.worker
        yield _tally(
            "etcron_runs", "Runs this worker ended, by final status", ("job", "status"), m.runs
        )
        yield _tally(
            "etcron_ticks_missed",
            "Ticks this worker recorded missed, by reason",
            ("job", "reason"),
            m.missed_ticks,
        )
        yield _tally(
            "etcron_ticks_skipped",
            "Ticks this worker recorded skipped, by reason",
            ("job", "reason"),
            m.skipped_ticks,
        )
        refusals = CounterMetricFamily(
            "etcron_job_refusals",
            "Job definitions this worker refused to run (once per revision), by reason",
            labels=["reason"],
        )
        for reason, n in sorted(m.refusals.items()):
            refusals.add_metric([reason], n)
        yield refusals
        claims = CounterMetricFamily(
            "etcron_claims",
            "Claims this worker sent, by outcome (handover: claimed with a release)",
            labels=["outcome"],
        )
        s = w.stats
        for outcome, n in (
            ("won", s["won"] - s["handovers"]),
            ("taken", s["taken"]),
            ("busy", s["busy"]),
            ("handover", s["handovers"]),
        ):
            claims.add_metric([outcome], n)
        yield claims
        yield CounterMetricFamily(
            "etcron_output_bytes", "Bytes of output of the runs this worker ended", m.output_bytes
        )
        yield _gauge(
            "etcron_session_lease_remaining_seconds",
            "Seconds the session lease is proven alive (0: no session)",
            max(0.0, w.lease_left()),
        )
        yield _gauge(
            "etcron_clock_skew_seconds", "This host's clock minus cluster time", w.clock.offset
        )
        yield _gauge(
            "etcron_clock_ok",
            "1 when the clock is compared with its peers and within worker.max_clock_skew",
            float(w.clock_ok()),
        )
        yield _gauge("etcron_runs_running", "Runs active on this worker", len(w.runs))
        yield _gauge("etcron_worker_capacity", "worker.capacity", w.cfg.capacity)
        yield _gauge("etcron_jobs", "Valid jobs in this worker's job table", len(w.table.jobs))
        yield _gauge(
            "etcron_jobs_refused",
            "Job definitions this worker refuses now (signature or policy)",
            len(w.table.refused),
        )
        yield _gauge("etcron_worker_ready", "1 when /readyz answers 200", float(not w.readiness()))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _tally(
    name: str, doc: str, labels: tuple[str, str], tally: Tally[tuple[str, str]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, n in sorted(tally.items()):
        family.add_metric(list(key), n)
    return family

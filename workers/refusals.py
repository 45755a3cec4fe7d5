"""Reporting refused job definitions: a log line, a metric, and one run record.

The job table (:class:`workers.state.JobTable`) queues a refusal the first
time it sees a revision of ``jobs/<name>`` that this worker will not run
(signature or policy, :mod:`workers.admission`). :meth:`Refusals.report`
takes the queue: each refusal is logged (warning) and counted
(``etcron_job_refusals_total{reason}``), and, when this worker is one the job
is aimed at (its ``selector`` matches this worker's labels) and the job is not
suspended, recorded as a ``missed`` run record whose message starts with
``refused`` and names the revision and the rule. So a refused job shows in
``etcron history`` once per revision and worker, not once per tick; a worker
that restarts records it once more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog

from scheduler.etcd.client import EtcdClient, EtcdError
from scheduler.keyspace import Keyspace
from scheduler.runs import RunRecord
from workers.admission import Verdict
from workers.metrics import WorkerMetrics
from workers.state import JobTable

log = structlog.get_logger("etcron.worker")


def refusal_message(revision: int, verdict: Verdict) -> str:
    return f"refused (definition revision {revision}): {verdict.refusal}"


class Refusals:
    def __init__(
        self,
        ks: Keyspace,
        worker_id: str,
        labels: dict[str, str],
        metrics: WorkerMetrics,
        now: Callable[[], datetime],
    ) -> None:
        self.ks = ks
        self.worker_id = worker_id
        self.labels = labels
        self.metrics = metrics
        self.now = now

    def aimed_here(self, verdict: Verdict) -> bool:
        spec = verdict.spec
        if spec is None or spec.suspend:
            return False
        return all(self.labels.get(k) == v for k, v in spec.selector.items())

    def report(self, table: JobTable) -> list[RunRecord]:
        """Log and count the queued refusals; the records to write (see :meth:`write`)."""
        queued, table.new_refusals = table.new_refusals, []
        records = []
        for name, revision, verdict in queued:
            message = refusal_message(revision, verdict)
            self.metrics.refused(verdict.reason)
            log.warning(
                "job definition refused",
                job=name,
                revision=revision,
                reason=verdict.reason,
                error=verdict.refusal,
                worker=self.worker_id,
            )
            if self.aimed_here(verdict):
                tick = self.now()
                records.append(RunRecord.missed(name, tick, message, worker=self.worker_id))
        return records

    async def write(self, client: EtcdClient, records: list[RunRecord]) -> None:
        """Write ``records`` (new keys; a failure is logged, the refusal stays logged and counted)."""
        for rec in records:
            with contextlib.suppress(EtcdError):
                await client.put(self.ks.run(rec.job, rec.run_id), rec.to_json())
                continue
            log.warning("could not record a refused job", job=rec.job, worker=self.worker_id)

"""etcd's quota as a budget, not a cliff (the elected master's part).

etcd refuses every write once its database reaches ``--quota-backend-bytes``
(the NOSPACE alarm): no claim, no release, no record. So the leader:

- **budgets run output**: the output chunks of each job's runs stay under
  ``master.output_budget_per_job_bytes`` and of all runs together under
  ``master.output_budget_bytes``; past either the oldest runs' chunks are deleted
  (their records stay, with the output tail they carry). Under a NOSPACE alarm
  the target is half the budget.
- **watches the database**: each sweep reads the size (``Status``) and the
  alarms, warns past 80 % of ``master.etcd_quota_bytes`` (at most every 10
  minutes) and reports both in :attr:`SpaceKeeper.last` (the API's health
  shows the alarms).
- **tells the workers when the output budget is spent** (``budget`` key:
  ``{"output_spent": true}`` while the output still over the budget after the
  oldest went, or the database is past 90 % of the quota, or NOSPACE): a
  worker then keeps each run's tail in its record and stops shipping chunks
  (``workers.output_sink``), recording the bytes as omitted.
- **recovers from NOSPACE** (``master.recover_nospace``, on by default): deletes
  what retention and the output budget allow (deletes are accepted under the
  alarm), compacts to the current revision, defragments every member one at a
  time (each blocks its member while it runs, but the cluster refuses writes
  anyway), and disarms the alarm once the database is below 90 % of the quota.
  Each step is logged at warning; if it is still too full it stays armed and the
  next sweep tries again.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field

import structlog

from scheduler.config import MasterConfig
from scheduler.etcd.client import (
    EtcdAuthError,
    EtcdClient,
    EtcdError,
    KeyValue,
    cmp_unchanged,
    op_delete,
    op_put,
)
from scheduler.keyspace import Keyspace
from scheduler.runs import RunRecord

log = structlog.get_logger("etcron.housekeeping")

WARN_AT = 0.8
DISARM_BELOW = 0.9
WARN_EVERY = 600.0


@dataclass
class SpaceReport:
    db_size: int = 0
    quota: int = 0
    alarms: list[str] = field(default_factory=list)
    recovered: bool = False


def stored_output(rec: RunRecord) -> int:
    """About how many bytes of the run's output are stored as chunks."""
    if not rec.output_chunks:
        return 0
    return max(0, rec.output_bytes - rec.output_omitted)


def over_budget(runs: list[RunRecord], budget: int, per_job: int = 0) -> list[RunRecord]:
    """The final runs whose output chunks go, oldest first: first each job's past
    ``per_job`` (0: no per-job budget), then all jobs' past ``budget`` together
    (running runs are never picked)."""
    final = sorted((r for r in runs if r.status.final and stored_output(r)), key=lambda r: r.run_id)
    doomed: dict[str, RunRecord] = {}
    if per_job:
        by_job: dict[str, int] = {}
        for r in runs:
            by_job[r.job] = by_job.get(r.job, 0) + stored_output(r)
        for rec in final:
            if by_job[rec.job] > per_job:
                doomed[rec.run_id] = rec
                by_job[rec.job] -= stored_output(rec)
    total = sum(stored_output(r) for r in runs) - sum(stored_output(r) for r in doomed.values())
    for rec in final:
        if total <= budget:
            break
        if rec.run_id not in doomed:
            doomed[rec.run_id] = rec
            total -= stored_output(rec)
    return sorted(doomed.values(), key=lambda r: r.run_id)


class SpaceKeeper:
    def __init__(self, client: EtcdClient, ks: Keyspace, config: MasterConfig) -> None:
        self.client = client
        self.ks = ks
        self.config = config
        self.last = SpaceReport()
        self._warned = 0.0
        self._spent: bool | None = None
        self.output_left = 0
        """Stored output past the budget after the last sweep dropped what it could."""

    async def drop_output(
        self, runs: list[tuple[RunRecord, KeyValue]], *, pressed: bool = False
    ) -> int:
        """Delete the output chunks of the oldest runs past the budget; how many runs.

        Each record is rewritten in the same transaction (guarded by its mod
        revision) to say its output was dropped, except under NOSPACE (``pressed``),
        when etcd takes only deletes: the record is fixed by a later sweep.
        """
        budget = self.config.output_budget_bytes // (2 if pressed else 1)
        kvs = {id(r): kv for r, kv in runs}
        per_job = self.config.output_budget_per_job_bytes // (2 if pressed else 1)
        doomed = over_budget([r for r, _ in runs], budget, per_job)
        total = sum(stored_output(r) for r, _ in runs) - sum(stored_output(r) for r in doomed)
        self.output_left = max(0, total - self.config.output_budget_bytes)
        for rec in doomed:
            dropped = rec.model_copy(
                update={"output_chunks": 0, "output_omitted": rec.output_bytes}
            )
            delete = op_delete(self.ks.run_output(rec.job, rec.run_id), prefix=True)
            kv = kvs[id(rec)]
            if pressed:
                await self.client.txn([], [delete])
            else:
                await self.client.txn(
                    [cmp_unchanged(kv)], [delete, op_put(kv.key, dropped.to_json())]
                )
        if doomed:
            log.warning(
                "output budget: dropped the output of the oldest runs",
                runs=len(doomed),
                budget=budget,
            )
        return len(doomed)

    async def check(self) -> SpaceReport:
        """Read the database size and the alarms; warn when it fills up."""
        try:
            status = await self.client.status()
            alarms = sorted(set(await self.client.alarms()))
        except EtcdAuthError:  # the master's etcd user may not read them: nothing known
            return self.last
        quota = self.config.etcd_quota_bytes
        rep = SpaceReport(status["db_size"], quota, alarms)
        now = time.monotonic()
        if "NOSPACE" in alarms:
            log.error("etcd is out of space (NOSPACE alarm)", db_size=rep.db_size, quota=quota)
        elif rep.db_size > WARN_AT * quota and now - self._warned > WARN_EVERY:
            self._warned = now
            log.warning("etcd database is filling up", db_size=rep.db_size, quota=quota)
        self.last = rep
        return rep

    async def tell_workers(self) -> bool:
        """Write ``budget`` when the verdict changed; the verdict (spent or not)."""
        rep = self.last
        spent = (
            self.output_left > 0
            or "NOSPACE" in rep.alarms
            or (rep.quota > 0 and rep.db_size > DISARM_BELOW * rep.quota)
        )
        if spent != self._spent:
            with contextlib.suppress(EtcdError):  # under NOSPACE the put fails: workers
                await self.client.put(  # find out anyway, as their chunks fail
                    self.ks.budget, json.dumps({"output_spent": spent}).encode()
                )
                self._spent = spent
                say = log.warning if spent else log.info
                say("output budget", spent=spent, db_size=rep.db_size, quota=rep.quota)
        return spent

    async def recover(self) -> bool:
        """After the caller freed what it could: compact, defragment, disarm if
        the database is now below the quota's margin. True when disarmed."""
        rev = await self.client.revision()
        await self.client.compact(rev)
        log.warning("NOSPACE: compacted", revision=rev)
        done = await self.client.defragment_all()
        status = await self.client.status()
        size, quota = status["db_size"], self.config.etcd_quota_bytes
        log.warning("NOSPACE: defragmented", members=done, db_size=size, quota=quota)
        if size >= DISARM_BELOW * quota:
            log.error("NOSPACE: still too full to disarm", db_size=size, quota=quota)
            return False
        try:
            await self.client.disarm()
        except EtcdError as exc:
            log.error("NOSPACE: could not disarm", error=str(exc))
            return False
        log.warning("NOSPACE: alarm disarmed, etcd accepts writes again", db_size=size)
        self.last = SpaceReport(size, quota, [], recovered=True)
        return True

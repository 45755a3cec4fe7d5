"""Every due tick accounted for: the ticks a fence jumped over get a record.

A tick that no worker claimed (every worker overloaded, stopped, outside the
clock bound, or cut off) leaves no trace by itself: the next claim simply
moves the job's tick fence past it. So the fence's put asks for the value it
replaced (``prev_kv``, see ``scheduler.etcd.claim_txn``), and whoever moved the
fence from P to T records every scheduled tick strictly between them as
``missed``. Moving the fence is atomic, so exactly one worker owns each such
gap and no gap is recorded twice.

At most ``MAX_RECORDS`` ticks of one gap get a record of their own (the first
ones); the last of them says about how many later ticks it stands for (a job
that fires every second and was stopped for a day gets 100 records, not
86,400).
"""

from __future__ import annotations

from datetime import datetime

import structlog

from scheduler.etcd.client import EtcdError, TxnSender, op_put
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, from_ms, tick_ms

log = structlog.get_logger("etcron.worker")

MAX_RECORDS = 100
BATCH = 64
"""Records per transaction (etcd's ``--max-txn-ops`` is 128 by default)."""

UNCLAIMED = "no worker claimed this tick before a later one was claimed"


def skipped_ticks(job: JobSpec, after_ms: int, before_ms: int) -> tuple[list[int], int]:
    """The first ``MAX_RECORDS`` scheduled ticks strictly between ``after_ms`` and
    ``before_ms``, and about how many more there are (0 when all are listed).

    Walks at most ``MAX_RECORDS + 1`` ticks, however long the gap.
    """
    sched, zone = job.schedule_obj(), job.zone()
    ticks: list[int] = []
    t = sched.next_after(from_ms(after_ms), zone)
    while (ms := tick_ms(t)) < before_ms:
        if len(ticks) == MAX_RECORDS:
            period = max(1, (ticks[-1] - ticks[0]) // (MAX_RECORDS - 1))
            return ticks, max(1, (before_ms - ms) // period)
        ticks.append(ms)
        t = sched.next_after(t, zone)
    return ticks, 0


def gap_records(
    job: JobSpec, after_ms: int, before_ms: int, worker: str, now: datetime
) -> list[RunRecord]:
    ticks, more = skipped_ticks(job, after_ms, before_ms)
    records = []
    for i, ms in enumerate(ticks):
        tick = from_ms(ms)
        message = UNCLAIMED
        if more and i == len(ticks) - 1:
            message += f" (and about {more} later ticks before {from_ms(before_ms).isoformat()})"
        records.append(RunRecord.missed(job.name, tick, message, worker=worker, end=now))
    return records


async def record_gap(
    client: TxnSender,
    ks: Keyspace,
    job: JobSpec,
    after_ms: int,
    before_ms: int,
    worker: str,
    now: datetime,
) -> int:
    """Write the ``missed`` records of a gap; return how many were written."""
    records = gap_records(job, after_ms, before_ms, worker, now)
    written = 0
    for i in range(0, len(records), BATCH):
        ops = [op_put(ks.run(r.job, r.run_id), r.to_json()) for r in records[i : i + BATCH]]
        try:
            await client.txn_once([], ops)
        except EtcdError as exc:
            log.warning("could not record missed ticks", job=job.name, error=str(exc))
            return written
        written += len(ops)
    if records:
        log.warning(
            "ticks missed: no worker claimed them",
            job=job.name,
            ticks=len(records),
            first=records[0].tick.isoformat(),
        )
    return written

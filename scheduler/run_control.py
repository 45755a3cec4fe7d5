"""Kill and manual-run requests, and ending runs whose worker is gone.

Rules this module keeps (for :class:`scheduler.store.JobStore`):

- Kill and manual-run requests are short-lived keys on their own lease
  (:data:`KILL_TTL`, :data:`TRIGGER_TTL` seconds), written only if the job
  exists, each with its audit entry; their values are the models of
  :mod:`scheduler.run_requests`.
- **A kill ends every running run**, also one whose worker is gone: a
  ``running`` record whose worker lease no longer exists gets its final record
  here (``killed``, message :data:`WORKER_GONE`), by :func:`end_orphaned_run`:
  a compare-and-swap on the record's mod revision (a worker's own late final
  record is never overwritten; one written after ours replaces it), and the
  job's lock deleted in the same transaction only if its create revision is the
  run's fencing token and its lease is dead too. Runs whose lease is alive are
  left to their worker, which sees the kill request.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from scheduler.audit import Operation
from scheduler.etcd.client import (
    GREATER,
    EtcdClient,
    KeyValue,
    cmp_created,
    cmp_mod,
    cmp_unchanged,
    op_delete,
    op_put,
)
from scheduler.keyspace import Keyspace
from scheduler.run_requests import RunRequest, StopRequest
from scheduler.runs import RunRecord, RunStatus
from scheduler.store_errors import JobNotFound

if TYPE_CHECKING:
    from scheduler.store import JobStore

log = structlog.get_logger("etcron.store")

KILL_TTL = 30
TRIGGER_TTL = 60
WORKER_GONE = "killed by request: worker gone (its lease no longer exists)"


async def put_if_job(
    store: JobStore, job: str, key: str, value: bytes, ttl: int, operation: Operation, detail: str
) -> None:
    """Put ``key`` on a fresh lease of ``ttl`` s with its audit entry, only if ``job`` exists."""
    lease, _ = await store.client.grant(ttl)
    job_key = store.ks.job(job)
    rec = await store.journal.record(store.actor, operation, [], jobs=[job], detail=detail)
    res = await store.client.txn(
        [cmp_created(job_key, 0, GREATER)],
        [op_put(key, value, lease), *rec.ops],
    )
    if not res.succeeded:
        await store.client.revoke(lease)
        raise JobNotFound(job)


async def request_kill(store: JobStore, job: str) -> list[str]:
    """Stop every running run of ``job``; the run ids ended here.

    Live workers are asked through ``killer/<job>`` (the key lives KILL_TTL s)
    and record their runs themselves. A ``running`` record whose worker lease
    is dead has nobody left to end it: it is ended here as ``killed``
    (see :func:`end_orphaned_run`) and its run id returned.
    """
    await put_if_job(
        store,
        job,
        store.ks.killer(job),
        StopRequest.kill(store.clock.now()).encode(),
        KILL_TTL,
        "kill",
        "kill requested",
    )
    return await end_orphaned_runs(store, job, RunStatus.KILLED, WORKER_GONE)


async def end_orphaned_runs(
    store: JobStore, job: str, status: RunStatus, message: str
) -> list[str]:
    """End the ``running`` records of ``job`` whose worker lease is dead; their run ids."""
    kvs, _ = await store.client.get_prefix(store.ks.job_runs(job))
    alive: dict[int, bool] = {}
    ended: list[str] = []
    for kv in kvs:
        try:
            rec = RunRecord.from_json(kv.value)
        except ValueError:
            continue  # reported by list_runs; nothing to end
        if rec.status is not RunStatus.RUNNING or not rec.lease:
            continue
        if rec.lease not in alive:
            alive[rec.lease] = await store.client.lease_ttl(rec.lease) > 0
        if alive[rec.lease]:
            continue
        if await end_orphaned_run(
            store.client, store.ks, kv, rec, status, message, store.clock.now(), alive
        ):
            ended.append(rec.run_id)
    if ended:
        log.warning("ended runs whose worker is gone", job=job, runs=ended, status=str(status))
    return ended


async def request_run(store: JobStore, job: str) -> str:
    """Ask for one manual run of ``job`` now; returns the request id."""
    now = store.clock.now()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    request_id = f"{stamp}-{secrets.token_hex(4)}"
    value = RunRequest(request_id=request_id, requested_at=now).encode()
    key = store.ks.trigger(job, request_id)
    await put_if_job(store, job, key, value, TRIGGER_TTL, "run", f"request {request_id}")
    return request_id


async def end_orphaned_run(
    client: EtcdClient,
    ks: Keyspace,
    kv: KeyValue,
    rec: RunRecord,
    status: RunStatus,
    message: str,
    now: datetime,
    alive: dict[int, bool] | None = None,
) -> bool:
    """Write the final record of a ``running`` run whose worker lease is dead.

    The caller has checked that ``rec.lease`` is dead. One transaction, guarded
    by the record's mod revision (``kv``): the final record, and the job's lock
    (``lock/J``, or ``lock/J/<run>`` for ``allow``) deleted only if its mod
    revision is the run's fencing token (the revision of the claim or hand-over
    that wrote it, which is also the record's create revision) and its lease is
    dead. Returns True when this call
    wrote the record; False when the record changed meanwhile (its worker, or
    another master, wrote it first).
    """
    alive = {} if alive is None else alive
    alive.setdefault(rec.lease, False)
    token = rec.fencing_token or kv.create_revision
    final = RunRecord.lost(rec, end=now, message=message, status=status)
    for _ in range(3):
        compares = [cmp_unchanged(kv)]
        ops = [op_put(kv.key, final.to_json())]
        for lock_key in (ks.lock(rec.job), ks.run_lock(rec.job, rec.run_id)):
            lock, _ = await client.get(lock_key)
            if lock is None or lock.mod_revision != token:
                continue  # gone with its lease, or another run's: not ours to touch
            if lock.lease and lock.lease not in alive:
                alive[lock.lease] = await client.lease_ttl(lock.lease) > 0
            if lock.lease and alive[lock.lease]:
                continue
            compares.append(cmp_mod(lock_key, token))
            ops.append(op_delete(lock_key))
        res = await client.txn(compares, ops)
        if res.succeeded:
            return True
        now_kv, _ = await client.get(kv.key)
        if now_kv is None or now_kv.mod_revision != kv.mod_revision:
            return False  # the record moved: whoever wrote it decided
        # only a lock moved (it went with its lease): decide again without it
    return False

"""``concurrency: replace``: stop the run that holds the lock, then take it.

The claim took the tick fence without the lock (``ClaimRequest.tick`` with no
lock key). At the tick the new run asks the holder to stop through
``replace/<job>`` (workers may not write kill requests, docs/security.md; the
holder honours it for ``replace`` jobs and the named run only) and takes the
lock with ``scheduler.etcd.claim_txn.acquire`` once it is free. Bounded: it gives
up when the holder's timeout, its kill grace and two lease lifetimes have
passed, or when the session ends.
"""

from __future__ import annotations

import asyncio

import structlog

from scheduler.config import WorkerConfig
from scheduler.etcd.claim_txn import acquire
from scheduler.etcd.client import EtcdClient, EtcdUnavailable
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.run_requests import StopRequest
from scheduler.runs import LockValue

log = structlog.get_logger("etcron.worker")


async def take_over(
    client: EtcdClient,
    ks: Keyspace,
    cfg: WorkerConfig,
    job: JobSpec,
    lock_key: str,
    value: bytes,
    session: Session,
) -> int:
    """The lock's fencing token once this run holds it, or 0 if it gave up."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + (job.timeout or 0) + cfg.kill_grace + 2 * cfg.lease_ttl + 5
    asked = b""
    while loop.time() < give_up and session.remaining() > 0:
        try:
            token, holder = await acquire(client, lock_key, value, session.lease_id)
        except EtcdUnavailable:
            await asyncio.sleep(0.5)
            continue
        if token:
            return token
        if holder and holder != asked:
            run_id = LockValue.run_id_of(holder)
            await client.put(
                ks.replacing(job.name),
                StopRequest.replace(run_id).encode(),
                lease=session.lease_id,
            )
            asked = holder
        await asyncio.sleep(0.1)
    log.error("replace: the previous run did not stop in time", worker=cfg.id, job=job.name)
    return 0

"""The live workers as the master shows them: registrations with a skew.

Registrations are parsed by the one model (:mod:`scheduler.registration`); a
key without a lease (no live session stands behind it) is not a worker.
"""

from __future__ import annotations

import statistics
from typing import Any

import structlog

from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.registration import WorkerRegistration

log = structlog.get_logger("etcron.store")


async def list_workers(client: EtcdClient, ks: Keyspace) -> list[dict[str, Any]]:
    """Live worker registrations, sorted by id, each with a ``skew`` in seconds.

    ``skew`` is the value the worker reports itself (its clock minus the
    median of its peers' clocks, measured as their registrations arrive),
    when present. Otherwise it is estimated here as the worker's published
    ``clock`` minus the median published clock; registrations are refreshed
    every few seconds, so that fallback is only accurate to that interval.
    """
    kvs, _ = await client.get_prefix(ks.workers)
    workers: list[dict[str, Any]] = []
    for kv in kvs:
        if not kv.lease:
            continue  # no live session stands behind it: stale or forged, not a worker
        reg = WorkerRegistration.parse(kv.value, worker_id=ks.parse_worker(kv.key))
        if reg is None:
            log.warning("invalid worker registration", key=kv.key)
            continue
        workers.append(reg.shown())
    clocks = [float(w["clock"]) for w in workers if _is_number(w.get("clock"))]
    median = statistics.median(clocks) if clocks else None
    for w in workers:
        if _is_number(w.get("skew")):
            w["skew"] = float(w["skew"])
        elif median is not None and _is_number(w.get("clock")):
            w["skew"] = round(float(w["clock"]) - median, 4)
        else:
            w["skew"] = None
    workers.sort(key=lambda w: str(w["id"]))
    return workers


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)

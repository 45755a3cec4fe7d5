"""Delivery records: one per (job, run, event, sink), under ``notify/``.

Rules:

- The key (:meth:`Keyspace.notification`) is the idempotency key. The leader
  creates it (``pending``) before the first attempt, with a create-only
  transaction that also requires the election's owner compare
  (:func:`scheduler.etcd.election.is_owner`: ``leader`` holds our identity), so a
  master that is no longer leader never starts a delivery, and a record that
  exists is never delivered again: not after a watch resumed, not by the next
  leader.
- A ``pending`` record written by another master is one whose leader stopped
  mid-delivery: the new leader takes it over (compare-and-swap on its mod
  revision) and delivers it. That is the one case of a possible second
  delivery (the old leader may have sent it and died before writing the
  outcome); receivers can drop duplicates by ``X-Etcron-Delivery``.
- The outcome (``delivered``, ``failed``, ``rate_limited``) is written over it,
  again only while the leader key holds our identity.
- Retention: per job the newest ``notify.keep`` records, none older than
  ``master.keep_for`` (:func:`expired`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from scheduler.etcd.client import (
    EtcdClient,
    KeyValue,
    cmp_absent,
    cmp_unchanged,
    op_get,
    op_put,
)
from scheduler.etcd.election import is_owner
from scheduler.keyspace import Keyspace


class Outcome(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    RATE_LIMITED = "rate_limited"


class Delivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job: str
    run_id: str
    event: str
    sink_kind: str
    sink: str
    """The target, redacted (:func:`scheduler.notify.rules.redact`)."""
    sink_id: str
    status: Outcome
    attempts: int = 0
    error: str = ""
    created: datetime
    updated: datetime
    master: str = ""

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes) -> Delivery:
        return cls.model_validate_json(data)


class Claimed(StrEnum):
    NEW = "new"
    """Ours to deliver."""
    DONE = "done"
    """Delivered, failed or dropped before, or in flight here: nothing to do."""
    NOT_LEADER = "not_leader"


async def claim(
    client: EtcdClient, ks: Keyspace, d: Delivery, identity: str, *, again: bool = True
) -> tuple[Claimed, Delivery]:
    """Create the record ``pending`` (or take over another master's ``pending`` one)."""
    key = ks.notification(d.job, d.run_id, d.event, d.sink_id)
    leader = is_owner(ks.leader, identity)
    res = await client.txn(
        [cmp_absent(key), leader], [op_put(key, d.to_json())], [op_get(key), op_get(ks.leader)]
    )
    if res.succeeded:
        return Claimed.NEW, d
    found, lead = res.responses
    if not lead or lead[0].value != identity.encode():
        return Claimed.NOT_LEADER, d
    if not found:  # deleted between (retention): try once more
        return await claim(client, ks, d, identity, again=False) if again else (Claimed.DONE, d)
    try:
        old = Delivery.from_json(found[0].value)
    except ValueError:
        return Claimed.DONE, d
    if old.status is not Outcome.PENDING or old.master == identity:
        return Claimed.DONE, old
    took = d.model_copy(update={"attempts": old.attempts, "created": old.created})
    res = await client.txn([cmp_unchanged(found[0]), leader], [op_put(key, took.to_json())])
    return (Claimed.NEW, took) if res.succeeded else (Claimed.DONE, old)


async def finish(client: EtcdClient, ks: Keyspace, d: Delivery, identity: str) -> bool:
    """Write the outcome, while we lead; False when we no longer do."""
    key = ks.notification(d.job, d.run_id, d.event, d.sink_id)
    res = await client.txn([is_owner(ks.leader, identity)], [op_put(key, d.to_json())])
    return res.succeeded


def parse(kvs: list[KeyValue]) -> list[Delivery]:
    out = []
    for kv in kvs:
        try:
            out.append(Delivery.from_json(kv.value))
        except ValueError:
            continue
    return out


MAX_SCAN = 20_000
"""Delivery records one listing reads at most (a listing must scan to sort by time)."""


async def recent(
    client: EtcdClient, ks: Keyspace, job: str | None, limit: int, before: str = ""
) -> tuple[list[Delivery], bool]:
    """The newest deliveries (of ``job``, or of every job), newest first, at most
    ``limit``; ``before``: only those updated before this ISO time (paging).
    Also whether every record was read (False: more than :data:`MAX_SCAN`)."""
    prefix = ks.job_notifications(job) if job else ks.notifications
    kvs: list[KeyValue] = []
    complete = True
    async for page, _ in client.pages(prefix):
        kvs.extend(page)
        if len(kvs) >= MAX_SCAN:
            complete = False
            break
    found = parse(kvs)
    if before:
        found = [d for d in found if d.updated.isoformat() < before]
    found.sort(key=lambda d: (d.updated, d.run_id), reverse=True)
    return found[:limit], complete


def expired(kvs: list[KeyValue], ks: Keyspace, keep: int, horizon: datetime) -> list[str]:
    """Keys of delivery records past retention: beyond the newest ``keep`` of
    their job, or last updated before ``horizon``; unreadable ones too."""
    by_job: dict[str, list[tuple[datetime, str]]] = {}
    doomed: list[str] = []
    for kv in kvs:
        try:
            d = Delivery.from_json(kv.value)
        except ValueError:
            doomed.append(kv.key)
            continue
        by_job.setdefault(d.job, []).append((d.updated, kv.key))
    for items in by_job.values():
        items.sort(reverse=True)
        doomed += [key for i, (at, key) in enumerate(items) if i >= keep or at < horizon]
    return doomed

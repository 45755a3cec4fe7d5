"""The audit trail: one entry per change, who made it, from where, and what changed.

Rules this module keeps:

- **An entry goes in the change's own transaction** (built by
  :class:`scheduler.changes.Journal`), so a change without its entry cannot
  happen. One entry per operation (apply, put, delete, suspend, resume, run,
  kill, rollback); an apply written in several batches has one entry per
  batch, each naming the batch's jobs (each batch is its own transaction).
- **Bounded size.** An entry lists its jobs (at most one batch of them) and, per
  changed job, the spec hashes before and after and the names of the changed
  top-level fields, never the specs themselves (the definition history keeps
  those); ``detail`` is clipped to :data:`MAX_DETAIL` characters.
- **Keys sort by time**: ``audit/<epoch ms, zero-padded>-<random>``; listing
  newest first is a descending range read, paged by key (:func:`list_entries`).
- **Retention** (:func:`trim`, run by the leader's housekeeping): entries older
  than ``audit_keep_for`` go, and the oldest beyond ``audit_max_entries``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from pydantic import BaseModel

from scheduler.clip import clip
from scheduler.etcd.client import EtcdClient, Op, op_put
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec

log = structlog.get_logger("etcron.audit")

MAX_DETAIL = 500
PAGE = 200
"""Entries asked of etcd per range read when listing."""
MAX_SCAN = 20_000
"""Entries one listing looks at, at most; it then answers a ``next`` cursor to go on."""
TRIM_BATCH = 10_000
"""Entries one retention pass deletes for the count limit, at most."""

Operation = Literal["apply", "put", "delete", "suspend", "resume", "run", "kill", "rollback"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: the API token's name and the client's address."""

    name: str
    address: str = ""


SYSTEM = Actor("system")
"""The actor of writes made without an API request (tests, tools)."""


class JobDelta(BaseModel):
    """What one change did to one job."""

    job: str
    change: Literal["create", "update", "delete"]
    before: str | None = None
    """Hash of the spec before (first 12 hex digits of its JSON's SHA-256); None: absent."""
    after: str | None = None
    fields: list[str] = []
    """Top-level spec fields whose value changed (all set fields for create/delete)."""
    version: int | None = None
    """The definition-history version this change wrote."""


class AuditEntry(BaseModel):
    id: str = ""
    """The key's tail (``<ms>-<nonce>``), filled in when read."""
    at: datetime
    who: str
    address: str = ""
    operation: Operation
    jobs: list[str]
    changes: list[JobDelta] = []
    detail: str = ""


def spec_hash(spec: JobSpec | None) -> str | None:
    return None if spec is None else hashlib.sha256(spec.to_json()).hexdigest()[:12]


def delta(name: str, before: JobSpec | None, after: JobSpec | None, version: int) -> JobDelta:
    old = before.model_dump(mode="json", exclude_defaults=True) if before else {}
    new = after.model_dump(mode="json", exclude_defaults=True) if after else {}
    fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    change: Literal["create", "update", "delete"] = (
        "create" if before is None else "delete" if after is None else "update"
    )
    return JobDelta(
        job=name,
        change=change,
        before=spec_hash(before),
        after=spec_hash(after),
        fields=fields,
        version=version,
    )


def entry_op(ks: Keyspace, entry: AuditEntry) -> Op:
    at_ms = int(entry.at.timestamp() * 1000)
    value = entry.model_copy(update={"detail": clip(entry.detail, MAX_DETAIL)})
    return op_put(
        ks.audit_entry(at_ms, secrets.token_hex(4)),
        value.model_dump_json(exclude={"id"}).encode(),
    )


def range_end(prefix: str) -> str:
    """The first key after every key under ``prefix`` (which ends with ``/``)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def list_entries(
    client: EtcdClient,
    ks: Keyspace,
    *,
    job: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[AuditEntry], str | None]:
    """Entries newest first: at most ``limit``, about ``job`` if given, not older
    than ``since``, older than the cursor ``before`` (an entry id).

    Reads ranges of :data:`PAGE` keys downwards and stops after :data:`MAX_SCAN`
    entries; the second value is the cursor to continue from (the id of the last
    entry looked at) when there may be more, else None. Malformed values are
    logged and skipped.
    """
    start = ks.audit_at(int(since.timestamp() * 1000)) if since else ks.audit
    end = ks.audit + before if before else range_end(ks.audit)
    out: list[AuditEntry] = []
    scanned = 0
    while True:
        kvs, more = await client.range(start, end, limit=PAGE, newest_first=True)
        for kv in kvs:
            scanned += 1
            tail = ks.parse_audit(kv.key)
            end = kv.key  # the next page ends before this key
            try:
                entry = AuditEntry.model_validate_json(kv.value)
            except ValueError as exc:
                log.warning("invalid audit entry in etcd", key=kv.key, error=str(exc))
                continue
            if job is None or job in entry.jobs:
                out.append(entry.model_copy(update={"id": tail}))
            if len(out) >= limit or scanned >= MAX_SCAN:
                return out, tail if (more or kv is not kvs[-1]) else None
        if not more or not kvs:
            return out, None


async def trim(
    client: EtcdClient, ks: Keyspace, *, keep_for: float, max_entries: int, at: datetime
) -> int:
    """Delete entries older than ``keep_for`` seconds before ``at``, then the oldest
    beyond ``max_entries`` (at most :data:`TRIM_BATCH` a pass); how many went."""
    cutoff_ms = int(at.timestamp() * 1000 - keep_for * 1000)
    deleted = await client.delete_range(ks.audit, ks.audit_at(cutoff_ms))
    excess = await client.count_prefix(ks.audit) - max_entries
    if excess > 0:
        kvs, _ = await client.range(
            ks.audit, range_end(ks.audit), limit=min(excess, TRIM_BATCH), keys_only=True
        )
        if kvs:
            deleted += await client.delete_range(ks.audit, kvs[-1].key + "\x00")
    if deleted:
        log.info("audit retention", deleted=deleted)
    return deleted

"""What a change writes besides the job itself: its audit entry and its versions.

:class:`Journal` builds, for one transaction of :class:`scheduler.store.JobStore`,
the compares and operations that record the change: one audit entry
(:mod:`scheduler.audit`) and, per job whose spec changes, one new version
(:mod:`scheduler.versions`). The store adds them to the same transaction as the
job writes, so a change is never made without its record. If a version number
was taken meanwhile, the compare fails and the whole transaction writes nothing
(the store treats it as a conflict and reads again).

Budget per changed job: 2 compares (the job's mod revision, the version key)
and up to 3 operations (the job, the version, the trim of old versions), plus
one audit operation per transaction; :data:`scheduler.job_apply.BATCH` keeps a
transaction under etcd's default ``--max-txn-ops`` (128).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from scheduler.audit import Actor, AuditEntry, JobDelta, Operation, delta, entry_op
from scheduler.clock import Clock
from scheduler.etcd.client import Cmp, EtcdClient, Op
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.versions import DEFAULT_KEEP, Version, latest_numbers, version_ops


@dataclass(frozen=True, slots=True)
class Edit:
    """One job's change: the spec before (None: absent) and after (None: deleted)."""

    name: str
    before: JobSpec | None
    after: JobSpec | None

    @property
    def changes(self) -> bool:
        return self.before != self.after


@dataclass
class Record:
    """The compares and operations to add to the change's transaction."""

    compares: list[Cmp] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    entry: AuditEntry | None = None


class Journal:
    def __init__(
        self,
        client: EtcdClient,
        ks: Keyspace,
        *,
        keep_versions: int = DEFAULT_KEEP,
        clock: Clock | None = None,
    ):
        if keep_versions < 1:
            raise ValueError("keep_versions must be at least 1")
        self.client = client
        self.ks = ks
        self.keep_versions = keep_versions
        self.clock = clock or Clock()
        """Stamps every audit entry and version (``Clock()``: the wall clock)."""

    async def record(
        self,
        actor: Actor,
        operation: Operation,
        edits: list[Edit],
        *,
        jobs: list[str] | None = None,
        detail: str = "",
        restored: int | None = None,
    ) -> Record:
        """The record of one transaction's change (``jobs``: when there are no edits)."""
        at = self.clock.now()
        out = Record()
        changed = [e for e in edits if e.changes]
        names = [e.name for e in changed]
        numbers = await latest_numbers(self.client, self.ks, names, self.keep_versions)
        deltas: list[JobDelta] = []
        for e in changed:
            last = numbers[e.name]
            d = delta(e.name, e.before, e.after, last + 1)
            assert d.version is not None
            version = Version(
                job=e.name,
                version=d.version,
                at=at,
                who=actor.name,
                address=actor.address,
                operation=operation,
                change=d.change,
                spec=None if e.after is None else json.loads(e.after.to_json()),
                restored=restored,
            )
            compares, ops = version_ops(self.ks, version, self.keep_versions)
            out.compares += compares
            out.ops += ops
            deltas.append(d)
        out.entry = AuditEntry(
            at=at,
            who=actor.name,
            address=actor.address,
            operation=operation,
            jobs=jobs if jobs is not None else [e.name for e in edits],
            changes=deltas,
            detail=detail,
        )
        out.ops.append(entry_op(self.ks, out.entry))
        return out

"""Restore a job to an earlier version of its definition (``etcron rollout undo``).

A rollback is a change like any other: a put guarded by the job's mod revision
(the caller's ``If-Match``, else the revision read here), with its audit entry
and a new version (operation ``rollback``, ``restored`` naming the version) in
the same transaction. A job that was deleted is restored by a rollback too (its
versions outlive it; ``expect`` 0: it must still not exist).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.clip import quote
from scheduler.model import JobSpec
from scheduler.store import ConflictError, JobStore, StoreError
from scheduler.versions import Version, get_version, list_versions


class NoSuchVersion(StoreError, LookupError):
    """The version asked for is not kept (never made, or older than ``keep_versions``)."""


class NotRestorable(StoreError, ValueError):
    """The version is a deletion, or its spec is no longer valid."""


@dataclass(frozen=True, slots=True)
class Rollback:
    job: str
    restored: int
    spec: JobSpec
    mod_revision: int
    changed: bool


async def rollback(store: JobStore, name: str, to: int | None, expect: int | None) -> Rollback:
    """Restore version ``to`` of ``name`` (None: the newest version whose spec
    differs from the current one), if the job is still at mod revision ``expect``
    (None: the revision read here). Raises ConflictError on a concurrent change."""
    kv, _ = await store.client.get(store.ks.job(name))
    mod = kv.mod_revision if kv is not None else 0
    if expect is not None and expect != mod:
        now = f"at mod revision {mod}" if kv is not None else "deleted"
        raise ConflictError(
            f"job {quote(name)} changed since it was read: it is {now}, not at mod revision "
            f"{expect}; nothing was restored",
            [name],
        )
    current = store.spec_of(kv)
    target = await _target(store, name, to, current)
    try:
        spec = target.job_spec()
    except ValueError as exc:
        raise NotRestorable(
            f"version {target.version} of job {quote(name)} cannot be restored: {exc}"
        ) from exc
    rev = await store.put_job(
        spec, expect_mod_revision=mod, operation="rollback", restored=target.version
    )
    return Rollback(name, target.version, spec, rev, spec != current)


async def _target(store: JobStore, name: str, to: int | None, current: JobSpec | None) -> Version:
    if to is not None:
        found = await get_version(store.client, store.ks, name, to)
        if found is None:
            raise NoSuchVersion(
                f"version {to} of job {quote(name)} is not kept "
                f"(the last {store.journal.keep_versions} versions are)"
            )
        return found
    for v in await list_versions(store.client, store.ks, name, store.journal.keep_versions):
        if v.spec is None:
            continue
        try:
            if v.job_spec() != current:
                return v
        except ValueError:
            continue
    raise NoSuchVersion(f"job {quote(name)} has no earlier version to restore")

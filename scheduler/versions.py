"""Definition history: every version of every job, kept apart from etcd's own history.

Rules this module keeps:

- **One key per version**, ``history/<job>/<version, zero-padded>``, written in
  the same transaction as the job write that made it (see
  :class:`scheduler.changes.Journal`), guarded by ``CreateRevision == 0`` so two
  writers can never both take a version number. Versions count up from 1 per
  job name and go on across a delete and a re-create.
- **A version holds the spec after the change** (``spec``), or ``None`` when the
  change deleted the job, with who (token name, address), when, and the
  operation. A write that changes nothing makes no version.
- **The last ``keep`` versions per job** are kept: the write of version *n*
  deletes versions up to *n - keep* in the same transaction.
- **A deleted job keeps its versions** (the deletion is a version too), so it can
  be restored by a rollback; nothing removes them but later versions of a job of
  the same name.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from scheduler.audit import Operation, spec_hash
from scheduler.etcd.client import Cmp, EtcdClient, Op, cmp_absent, op_delete_range, op_put
from scheduler.keyspace import VERSION_WIDTH, Keyspace
from scheduler.model import JobSpec

DEFAULT_KEEP = 20
MAX_VERSION = 10**VERSION_WIDTH - 1


class Version(BaseModel):
    job: str
    version: int
    at: datetime
    who: str
    address: str = ""
    operation: Operation
    change: Literal["create", "update", "delete"]
    spec: dict[str, Any] | None = None
    """The spec as stored (JSON object) after the change; None: the change deleted the job."""
    restored: int | None = None
    """For a rollback: the version whose spec it restored."""

    @property
    def spec_hash(self) -> str | None:
        """The hash audit entries name (None: a deletion, or a spec no longer valid)."""
        try:
            return None if self.spec is None else spec_hash(self.job_spec())
        except ValueError:
            return None

    def job_spec(self) -> JobSpec:
        """The spec of this version (ValueError if it no longer validates)."""
        if self.spec is None:
            raise ValueError(f"version {self.version} of job {self.job} is a deletion")
        return JobSpec.from_json(json.dumps(self.spec).encode())

    def summary(self) -> dict[str, Any]:
        """The version without its spec (for listings): ``spec_hash`` instead."""
        data = self.model_dump(mode="json", exclude={"spec"})
        data["spec_hash"] = self.spec_hash
        return data


def _number(key: str, ks: Keyspace, job: str) -> int:
    name, number = ks.parse_version(key)
    if name != job:
        raise ValueError(f"{key!r} is not a version of job {job!r}")
    return number


async def latest_number(client: EtcdClient, ks: Keyspace, job: str) -> int:
    """The newest version number of ``job`` (0: none yet)."""
    prefix = ks.job_history(job)
    kvs, _ = await client.range(prefix, ks.version(job, MAX_VERSION) + "\x00", limit=1,
                                newest_first=True, keys_only=True)  # fmt: skip
    return _number(kvs[0].key, ks, job) if kvs else 0


async def latest_numbers(
    client: EtcdClient, ks: Keyspace, names: list[str], keep: int
) -> dict[str, int]:
    """The newest version number of each of ``names`` (0: none yet).

    One keys-only range read over the histories from the first to the last
    name (an apply's batch is a run of names in order, so this is usually
    their versions only), bounded at ``2 * keep`` keys per name; if the range
    holds more (other names in between), one read per name instead.
    """
    if len(names) <= 2:
        return await latest_numbers_each(client, ks, names)
    dirs = sorted(ks.job_history(n) for n in names)
    start, end = dirs[0], dirs[-1][:-1] + "0"  # "0" follows "/": past every key of the last
    budget = 2 * keep * len(names)
    kvs, more = await client.range(start, end, limit=budget, keys_only=True)
    if more:
        return await latest_numbers_each(client, ks, names)
    out = dict.fromkeys(names, 0)
    for kv in kvs:
        try:
            name, number = ks.parse_version(kv.key)
        except ValueError:
            continue  # not a version's key
        if name in out:
            out[name] = max(out[name], number)
    return out


async def latest_numbers_each(client: EtcdClient, ks: Keyspace, names: list[str]) -> dict[str, int]:
    found = await asyncio.gather(*(latest_number(client, ks, n) for n in names))
    return dict(zip(names, found, strict=True))


def version_ops(ks: Keyspace, v: Version, keep: int) -> tuple[list[Cmp], list[Op]]:
    """Write version ``v`` (only if its key is new) and drop versions older than ``keep``."""
    key = ks.version(v.job, v.version)
    ops = [op_put(key, v.model_dump_json().encode())]
    oldest_kept = v.version - keep + 1
    if oldest_kept > 1:
        ops.append(op_delete_range(ks.job_history(v.job), ks.version(v.job, oldest_kept)))
    return [cmp_absent(key)], ops


async def list_versions(client: EtcdClient, ks: Keyspace, job: str, limit: int) -> list[Version]:
    """The newest ``limit`` versions of ``job``, newest first (malformed ones skipped)."""
    prefix = ks.job_history(job)
    kvs, _ = await client.range(
        prefix, ks.version(job, MAX_VERSION) + "\x00", limit=limit, newest_first=True
    )
    out = []
    for kv in kvs:
        try:
            out.append(Version.model_validate_json(kv.value))
        except ValueError:
            continue
    return out


async def get_version(client: EtcdClient, ks: Keyspace, job: str, number: int) -> Version | None:
    kv, _ = await client.get(ks.version(job, number))
    if kv is None:
        return None
    return Version.model_validate_json(kv.value)  # ValueError when malformed

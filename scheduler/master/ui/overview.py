"""The data behind the jobs page: every job listed once, one page shown.

Rules (the page answers in < 300 ms for 10,000 jobs, bench/ui_jobs.py):

- One range read of ``jobs/`` per request. Parsed specs are kept by
  (name, mod revision), so a value is validated once, not on every request.
- The visible page's run state (the newest :data:`RECENT` records of each job:
  last run, running count, recent outcomes) is one transaction of range reads,
  one per job, newest first with a limit: no per-job round trip.
- Filters that need more than the specs cost one more read each: *running* the
  keys of ``lock/`` (keys only), *no eligible worker* the worker registrations,
  *failing* the newest record of every job (transactions of :data:`BATCH` range
  reads each, a few at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.cli.status import eligible
from scheduler.etcd.client import KeyValue, op_newest
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from scheduler.store import JobStore

PAGE_SIZE = 50
RECENT = 10
"""Run records read per visible job (the 'recent outcomes' strip)."""
BATCH = 100
"""Range reads per transaction (etcd's default ``--max-txn-ops`` is 128)."""
PARALLEL = 4
FILTERS = ("failing", "running", "suspended", "no-worker")
FAILED = frozenset(
    {RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.KILLED, RunStatus.LOST, RunStatus.MISSED}
)


@dataclass
class JobRow:
    spec: JobSpec
    runs: list[RunRecord] = field(default_factory=list)
    """Newest first."""

    @property
    def last(self) -> RunRecord | None:
        return self.runs[0] if self.runs else None

    @property
    def active(self) -> int:
        return sum(1 for r in self.runs if r.status is RunStatus.RUNNING)


@dataclass
class Listing:
    rows: list[JobRow]
    total: int
    """Jobs matching the search and filter."""
    page: int
    pages: int
    invalid: list[tuple[str, str]]


class SpecCache:
    """Parsed specs by name, valid while the mod revision is the same."""

    def __init__(self) -> None:
        self._specs: dict[str, tuple[int, JobSpec]] = {}

    async def jobs(self, store: JobStore) -> tuple[list[JobSpec], list[tuple[str, str]]]:
        kvs, _ = await store.client.get_prefix(store.ks.jobs)
        specs: list[JobSpec] = []
        bad: list[tuple[str, str]] = []
        seen: dict[str, tuple[int, JobSpec]] = {}
        for kv in kvs:  # key order is name order
            name = Keyspace.tail(kv.key, store.ks.jobs)
            cached = self._specs.get(name)
            if cached is not None and cached[0] == kv.mod_revision:
                spec = cached[1]
            else:
                try:
                    spec = JobSpec.from_json(kv.value)
                    if spec.name != name:
                        raise ValueError(f"spec name {spec.name!r} does not match its key")
                except ValueError as exc:
                    bad.append((name, str(exc)))
                    continue
            seen[name] = (kv.mod_revision, spec)
            specs.append(spec)
        self._specs = seen
        return specs, bad


WORKER_FIELDS: dict[str, Any] = dict.fromkeys(
    ("host", "pid", "capacity", "running", "skew", "version", "labels")
)
"""Shown for every worker; a registration without one shows ``-``."""


async def live_workers(store: JobStore) -> list[dict[str, Any]]:
    """The registrations with every shown field present and ``labels`` a mapping
    (a registration of an odd shape is shown, never a reason for an error)."""
    out = []
    for registration in await store.list_workers():
        w = {**WORKER_FIELDS, **registration}
        if not isinstance(w["labels"], dict):
            w["labels"] = {}
        out.append(w)
    return out


def matches(spec: JobSpec, query: str) -> bool:
    """Every word of ``query`` matches: ``key=value`` a label, other words the name."""
    for word in query.split():
        key, sep, value = word.partition("=")
        if sep:
            if spec.labels.get(key) != value:
                return False
        elif word.lower() not in spec.name:
            return False
    return True


async def _newest(store: JobStore, names: Sequence[str], limit: int) -> dict[str, list[KeyValue]]:
    """The newest ``limit`` run keys of each job: BATCH range reads per transaction."""
    out: dict[str, list[KeyValue]] = {}
    gate = asyncio.Semaphore(PARALLEL)

    async def batch(part: Sequence[str]) -> None:
        async with gate:
            ops = [op_newest(store.ks.job_runs(n), limit) for n in part]
            res = await store.client.txn([], ops)
        out.update(zip(part, res.responses, strict=True))

    parts = [names[i : i + BATCH] for i in range(0, len(names), BATCH)]
    await asyncio.gather(*(batch(p) for p in parts))
    return out


async def newest_runs(
    store: JobStore, names: Sequence[str], limit: int
) -> dict[str, list[RunRecord]]:
    """The newest ``limit`` records of each job, newest first (malformed ones skipped)."""
    out: dict[str, list[RunRecord]] = {}
    for name, kvs in (await _newest(store, names, limit)).items():
        recs = []
        for kv in kvs:
            with contextlib.suppress(ValueError):
                recs.append(RunRecord.from_json(kv.value))
        out[name] = recs
    return out


async def newest_statuses(
    store: JobStore, names: Sequence[str], limit: int
) -> dict[str, list[str]]:
    """Only the statuses of the newest records (no full parse: the *failing* filter)."""
    out: dict[str, list[str]] = {}
    for name, kvs in (await _newest(store, names, limit)).items():
        statuses = [RunRecord.status_of(kv.value) for kv in kvs]
        out[name] = [s for s in statuses if s is not None]
    return out


def _failing(statuses: Iterable[str]) -> bool:
    """The newest run that ran (not running, not skipped) did not succeed."""
    for status in statuses:
        if status in (RunStatus.RUNNING, RunStatus.SKIPPED):
            continue
        return status in FAILED
    return False


async def _running_jobs(store: JobStore) -> set[str]:
    kvs, _ = await store.client.get_prefix(store.ks.locks, keys_only=True)
    return {Keyspace.tail(kv.key, store.ks.locks).split("/", 1)[0] for kv in kvs}


async def apply_filter(store: JobStore, specs: list[JobSpec], which: str) -> list[JobSpec]:
    if which == "suspended":
        return [s for s in specs if s.suspend]
    if which == "running":
        running = await _running_jobs(store)
        return [s for s in specs if s.name in running]
    if which == "no-worker":
        live = await live_workers(store)
        return [s for s in specs if not eligible(s.selector, live)]
    if which == "failing":
        statuses = await newest_statuses(store, [s.name for s in specs], 3)
        return [s for s in specs if _failing(statuses.get(s.name, []))]
    return specs


async def listing(
    store: JobStore, cache: SpecCache, *, query: str, which: str, page: int
) -> Listing:
    specs, bad = await cache.jobs(store)
    if query:
        specs = [s for s in specs if matches(s, query)]
    specs = await apply_filter(store, specs, which)
    pages = max(1, -(-len(specs) // PAGE_SIZE))
    page = min(max(1, page), pages)
    shown = specs[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    runs = await newest_runs(store, [s.name for s in shown], RECENT)
    rows = [JobRow(s, runs.get(s.name, [])) for s in shown]
    return Listing(rows=rows, total=len(specs), page=page, pages=pages, invalid=bad)

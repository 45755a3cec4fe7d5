"""What the keyspace says about the cluster: one function per doctor check.

The pure functions take what was read (registrations, jobs, sizes) and return
:class:`~scheduler.doctor.report.Check` results, so they are tested with
tables; :func:`lock_check` reads etcd itself (lease lookups).

Rules:

- **Clocks.** A worker's registration carries its skew (its clock minus the
  cluster's, estimated from its peers' clocks: ``workers.cluster_time``),
  whether it knows it yet, and whether it is within ``worker.max_clock_skew``
  (else it stands back from claiming). FAIL: outside the limit; WARN: not yet
  compared, or above half the limit, or its published clock is further from
  this host's than a registration's age can explain (a lone worker has no
  peer to compare with, so only that catches it).
- **Versions.** Workers and masters publish ``version``; more than one is WARN
  (a rolling upgrade is fine for a while, not for ever).
- **Locks.** ``lock/<job>`` stands on its worker's session lease, so etcd
  deletes it with the lease. A lock with no lease, or whose lease etcd no
  longer has, is stale: nothing will release it and the job never runs again
  (FAIL). A lock on a live lease that no live worker's registration shows is
  WARN (a session being replaced; it goes when that lease expires).
- **Selectors.** A job that is not suspended and that no live worker can take
  (:func:`scheduler.cli.status.eligible`, the rule ``etcron run`` and
  ``apply`` use) has every tick recorded ``missed``: FAIL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.cli.status import eligible, selector_text
from scheduler.doctor.report import Check, fail, ok, warn
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.notify.deliveries import Delivery
from scheduler.registration import WorkerRegistration

REGISTRATION_AGE = 10.0
"""Seconds a registration's published clock may lag this host's without a warning:
workers rewrite it every 2 s and a paused one keeps it until its lease (6 s) ends."""

SPACE_WARN, SPACE_FAIL = 0.80, 0.95
"""Fractions of ``master.etcd_quota_bytes`` (the alert rules use the same)."""

MAX_LEASE_LOOKUPS = 50
"""Distinct unknown leases of lock keys looked up in one run (the rest are named)."""


def _names(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def size_text(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# workers -------------------------------------------------------------------------


def workers_check(workers: Sequence[Mapping[str, Any]]) -> Check:
    if not workers:
        return warn("workers", "no live worker is registered: no job runs")
    regs = [WorkerRegistration.lenient(w) for w in workers]
    ids = [r.id for r in regs]
    draining = [r.id for r in regs if r.draining]
    detail = f"{len(ids)} live: {_names(ids)}"
    if draining and len(draining) == len(ids):
        return warn("workers", f"{detail}; every one is draining: no job runs")
    if draining:
        detail += f"; draining: {_names(draining)}"
    return ok("workers", detail)


def clock_check(w: Mapping[str, Any], max_skew: float, now: float) -> Check:
    """One worker's clock (see the module docstring)."""
    reg = WorkerRegistration.lenient(w)
    name = f"clock {reg.id}"
    skew, published = reg.skew, reg.clock
    limit = f"worker.max_clock_skew {max_skew:g}s"
    if skew is not None and (abs(skew) > max_skew or not reg.clock_ok):
        if not reg.clock_known:
            return warn(name, "not yet compared with its peers' clocks (just started?)")
        return fail(
            name,
            f"skew {skew:+.3f}s is outside {limit}: it does not claim; check NTP on its host",
        )
    if not reg.clock_known:
        return warn(name, "not yet compared with its peers' clocks (just started?)")
    if published is not None and abs(published - now) > REGISTRATION_AGE + max_skew:
        return warn(
            name,
            f"its published clock is {published - now:+.1f}s from this host's "
            f"(more than a registration's age explains): check NTP on both hosts",
        )
    if skew is None:
        return warn(name, "its registration carries no clock skew (an old version?)")
    if abs(skew) > max_skew / 2:
        return warn(name, f"skew {skew:+.3f}s is over half of {limit}")
    return ok(name, f"skew {skew + 0.0:+.3f}s (limit {max_skew:g}s)")


def versions_check(
    workers: Sequence[Mapping[str, Any]], masters: Sequence[Mapping[str, Any]]
) -> Check:
    by_version: dict[str, list[str]] = {}
    for kind, items in (("worker", workers), ("master", masters)):
        for item in items:
            version = str(item.get("version") or "unknown")
            by_version.setdefault(version, []).append(f"{kind} {item.get('id')}")
    if not by_version:
        return ok("versions", "no worker or master registered")
    if len(by_version) == 1:
        ((version, who),) = by_version.items()
        return ok("versions", f"all {len(who)} on {version}")
    parts = [f"{v} ({_names(who, 5)})" for v, who in sorted(by_version.items())]
    return warn("versions", f"{len(by_version)} versions: " + "; ".join(parts))


# jobs ------------------------------------------------------------------------------


def selectors_check(
    jobs: Sequence[JobSpec],
    bad: Sequence[tuple[str, str]],
    workers: Sequence[Mapping[str, Any]],
) -> Check:
    """Jobs no live worker can run, and job values in etcd that are not valid jobs."""
    stuck = []
    for job in jobs:
        if job.suspend or eligible(job.selector, workers):
            continue
        if not workers:
            stuck.append(f"{job.name} (no live worker)")
        elif job.selector:
            stuck.append(f"{job.name} (selector {selector_text(job.selector)})")
        else:
            stuck.append(f"{job.name} (every live worker is draining)")
    invalid = [f"{name} ({error[:120]})" for name, error in bad]
    if stuck or invalid:
        parts = []
        if stuck:
            parts.append(
                f"{len(stuck)} of {len(jobs)} jobs no live worker can run "
                f"(no eligible worker: their ticks are recorded missed): {_names(stuck)}"
            )
        if invalid:
            parts.append(f"{len(invalid)} invalid job values in etcd: {_names(invalid)}")
        return fail("jobs", "; ".join(parts))
    suspended = sum(1 for j in jobs if j.suspend)
    extra = f" ({suspended} suspended)" if suspended else ""
    return ok("jobs", f"{len(jobs)} jobs{extra}; each has an eligible live worker")


# etcd --------------------------------------------------------------------------


def space_check(db_size: int | None, quota: int) -> Check:
    if db_size is None:
        return warn("etcd space", "no member reported its database size")
    share = db_size / quota if quota > 0 else 0.0
    detail = (
        f"database {size_text(db_size)} of {size_text(quota)} quota "
        f"({share:.0%}, master.etcd_quota_bytes)"
    )
    if share >= SPACE_FAIL:
        return fail("etcd space", detail + ": near NOSPACE, etcd will refuse every write")
    if share >= SPACE_WARN:
        return warn("etcd space", detail + ": lower retention or the output budget")
    return ok("etcd space", detail)


def alarms_check(alarms: list[str] | None, why_unknown: str = "") -> Check:
    if alarms is None:
        return warn("etcd alarms", f"not read: {why_unknown or 'no member answered'}")
    active = sorted({a for a in alarms if a != "NONE"})
    if active:
        hint = " (etcd refuses every write)" if "NOSPACE" in active else ""
        return fail("etcd alarms", f"active: {', '.join(active)}{hint}")
    return ok("etcd alarms", "none active")


FAILING_STREAK = 3
"""A sink whose last this many deliveries all failed keeps failing (WARN)."""


def notifications_check(deliveries: Sequence[Delivery]) -> Check:
    """Notification sinks that keep failing: the newest :data:`FAILING_STREAK`
    deliveries of a sink (by its id) all ``failed``."""
    if not deliveries:
        return ok("notifications", "no deliveries recorded")
    by_sink: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_sink.setdefault(d.sink_id, []).append(d)
    failing = []
    for group in by_sink.values():
        newest = sorted(group, key=lambda d: d.updated, reverse=True)[:FAILING_STREAK]
        if len(newest) == FAILING_STREAK and all(d.status == "failed" for d in newest):
            last = newest[0]
            failing.append(f"{last.sink_kind} {last.sink} ({last.error or 'failed'})")
    if failing:
        return warn(
            "notifications",
            f"{len(failing)} sink(s) failed their last {FAILING_STREAK} deliveries: "
            + "; ".join(sorted(failing)),
        )
    return ok("notifications", f"{len(by_sink)} sink(s); none keeps failing")


async def lock_check(
    client: EtcdClient, ks: Keyspace, workers: Sequence[Mapping[str, Any]]
) -> Check:
    kvs, _ = await client.get_prefix(ks.locks)
    live = {int(w["lease"]) for w in workers if isinstance(w.get("lease"), int) and w["lease"]}
    ttls: dict[int, int] = {}
    stale: list[str] = []
    orphan: list[str] = []
    unchecked: list[str] = []
    for kv in kvs:
        name = Keyspace.tail(kv.key, ks.locks)
        if kv.lease and kv.lease in live:
            continue
        if kv.lease:
            if kv.lease not in ttls:
                if len(ttls) >= MAX_LEASE_LOOKUPS:
                    unchecked.append(name)
                    continue
                ttls[kv.lease] = await client.lease_ttl(kv.lease)
            ttl = ttls[kv.lease]
            if ttl >= 0:
                orphan.append(f"{name} (lease {kv.lease:x}, {ttl}s left)")
                continue
        now, _ = await client.get(kv.key)  # gone meanwhile with its lease: not stale
        if now is None or now.mod_revision != kv.mod_revision:
            continue
        why = "no lease" if not kv.lease else f"lease {kv.lease:x} is gone"
        stale.append(f"{name} ({why})")
    if stale:
        return fail(
            "locks",
            f"{len(stale)} stale: {_names(stale)}; nothing will release them and their jobs "
            f"do not run (delete the key, e.g. etcdctl del {ks.locks}NAME)",
        )
    if orphan or unchecked:
        parts = []
        if orphan:
            parts.append(
                f"{len(orphan)} held on a lease no live worker shows "
                f"(they go when it expires): {_names(orphan)}"
            )
        if unchecked:
            parts.append(f"{len(unchecked)} not checked (too many leases): {_names(unchecked)}")
        return warn("locks", "; ".join(parts))
    if not kvs:
        return ok("locks", "none held")
    return ok("locks", f"{len(kvs)} held, each by a live worker's session")

"""What a worker knows about the cluster, kept current by list-watches.

Each view applies :class:`Snapshot` (replace everything) and :class:`Batch`
(apply changes) items from :class:`scheduler.etcd.listwatch.ListWatch`, so a
view converges to etcd after reconnects and compactions (invariant I3).
A malformed value is logged and skipped; it never stops the other entries.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

import structlog

from scheduler.clock import Clock
from scheduler.etcd.client import KeyValue
from scheduler.etcd.listwatch import Batch, EventKind, Snapshot
from scheduler.keyspace import Keyspace, decode_tick
from scheduler.model import JobSpec
from scheduler.registration import WorkerRegistration
from scheduler.signing import spec_bytes
from workers.admission import Admission, Verdict
from workers.cluster_time import OffsetEstimator
from workers.peers import Peer

log = structlog.get_logger("etcron.worker")

Change = tuple[str, JobSpec | None]


def _kv_changes(
    item: Snapshot | Batch, known: Iterable[str], prefix: str
) -> list[tuple[str, KeyValue | None]]:
    """(name, key-value or None when gone) for every key the item touches."""
    if isinstance(item, Snapshot):
        out: list[tuple[str, KeyValue | None]] = [
            (Keyspace.tail(kv.key, prefix), kv) for kv in item.kvs.values()
        ]
        present = {name for name, _ in out}
        out.extend((name, None) for name in list(known) if name not in present)
        return out
    return [
        (Keyspace.tail(ev.key, prefix), ev.kv if ev.kind is EventKind.PUT else None)
        for ev in item.events
    ]


class JobTable:
    """Valid, admitted job specs by name, from ``<prefix>/jobs/``.

    With an :class:`workers.admission.Admission`, each value is judged once per
    mod revision (signature, policy); a refused one goes to ``refused`` instead
    of ``jobs``, and to ``new_refusals`` for the worker to record and report.
    """

    def __init__(self, prefix: str, admission: Admission | None = None) -> None:
        self.prefix = prefix
        self.admission = admission
        self.jobs: dict[str, JobSpec] = {}
        self.bad: dict[str, str] = {}
        self.refused: dict[str, Verdict] = {}
        self.new_refusals: list[tuple[str, int, Verdict]] = []
        """(name, mod revision, verdict) refused since the worker last took them."""
        self.revisions: dict[str, int] = {}
        """The revision each definition was last written at."""
        self.revision = 0

    def _judge(self, name: str, value: bytes) -> Verdict:
        if self.admission is not None:
            return self.admission.judge(name, value)
        try:
            spec = JobSpec.from_json(spec_bytes(value))
            if spec.name != name:
                raise ValueError(f"stored under {name!r} but named {spec.name!r}")
        except ValueError as exc:
            return Verdict(None, error=str(exc))
        return Verdict(spec)

    def apply(self, item: Snapshot | Batch) -> list[Change]:
        """Apply an item; return (name, new spec or None if removed) for each change."""
        changed: list[Change] = []
        known = [*self.jobs, *self.bad, *self.refused]
        for name, kv in _kv_changes(item, known, self.prefix):
            if kv is None:
                self.revisions.pop(name, None)
                self.bad.pop(name, None)
                self.refused.pop(name, None)
                if self.jobs.pop(name, None) is not None:
                    changed.append((name, None))
                continue
            if self.revisions.get(name) == kv.mod_revision:
                continue  # judged already (a re-list): never verified twice
            self.revisions[name] = kv.mod_revision
            verdict = self._judge(name, kv.value)
            if verdict.spec is None or verdict.refusal:
                if verdict.spec is None:
                    self.refused.pop(name, None)
                    self.bad[name] = verdict.error
                    log.error("skipping malformed job definition", job=name, error=verdict.error)
                else:
                    self.bad.pop(name, None)
                    self.refused[name] = verdict
                    self.new_refusals.append((name, kv.mod_revision, verdict))
                if self.jobs.pop(name, None) is not None:
                    changed.append((name, None))
                continue
            self.bad.pop(name, None)
            self.refused.pop(name, None)
            if self.jobs.get(name) != verdict.spec:
                self.jobs[name] = verdict.spec
                changed.append((name, verdict.spec))
        self.revision = item.revision
        return changed


class TickView:
    """The last claimed tick of each job (epoch ms), from ``<prefix>/ticks/``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ticks: dict[str, int] = {}
        self.kvs: dict[str, KeyValue] = {}
        self._waiters: dict[str, list[tuple[int, asyncio.Future[bool]]]] = {}

    def apply(self, item: Snapshot | Batch) -> list[str]:
        """Apply an item; return the names whose fence was set (not deleted)."""
        changed: list[str] = []
        for name, kv in _kv_changes(item, self.ticks, self.prefix):
            if kv is None:
                self.ticks.pop(name, None)
                self.kvs.pop(name, None)
                continue
            try:
                self.ticks[name] = decode_tick(kv.value)
            except ValueError:
                log.error("skipping malformed tick", job=name, value=kv.value[:40])
                continue
            self.kvs[name] = kv
            changed.append(name)
            for tick, fut in self._waiters.get(name, ()):
                if tick <= self.ticks[name] and not fut.done():
                    fut.set_result(True)
        return changed

    async def wait_taken(self, name: str, tick_ms: int, until: float, clock: Clock) -> bool:
        """Wait until ``tick_ms`` of ``name`` is taken, until wall instant ``until``
        of ``clock`` at the latest; False if it was not taken by then."""
        if self.taken(name, tick_ms):
            return True
        if until <= clock.time():
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (tick_ms, fut)
        self._waiters.setdefault(name, []).append(entry)
        timer = clock.call_at(until, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            waiting = self._waiters[name]
            waiting.remove(entry)
            if not waiting:
                del self._waiters[name]

    def taken(self, name: str, tick_ms: int) -> bool:
        return self.ticks.get(name, -1) >= tick_ms


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class PeerView:
    """Live workers, from ``<prefix>/workers/`` (keys vanish with their lease).

    Every registration that arrives by a watch event is also a sample of its
    writer's clock for :class:`workers.cluster_time.OffsetEstimator`.
    Registrations without a lease are kept apart (``orphans``): no session
    stands behind them, so they never count as workers.
    """

    def __init__(self, prefix: str, masters_prefix: str, estimator: OffsetEstimator) -> None:
        self.prefix = prefix
        self.masters_prefix = masters_prefix
        self.estimator = estimator
        self.peers: dict[str, Peer] = {}
        self.orphans: dict[str, KeyValue] = {}
        self.masters: set[str] = set()
        self.loaded: set[str] = set()
        """Which tables were listed once ("workers", "masters"): until both are,
        nobody can say this worker is alone."""
        self.joined = asyncio.Event()
        """Set when a worker we did not know registers (peers answer with a fresh sample)."""

    def apply(self, item: Snapshot | Batch) -> None:
        fresh = isinstance(item, Batch)
        if not fresh:
            self.loaded.add("workers")
        for wid, kv in _kv_changes(item, [*self.peers, *self.orphans], self.prefix):
            if kv is None:
                self.peers.pop(wid, None)
                self.orphans.pop(wid, None)
                self.estimator.forget(wid)
                continue
            if not kv.lease:
                self.peers.pop(wid, None)
                self.orphans[wid] = kv
                continue
            reg = WorkerRegistration.parse(kv.value)
            if reg is None or reg.invalid:
                bad = reg.invalid if reg is not None else []
                log.error("skipping malformed worker registration", worker=wid, fields=bad)
                continue
            peer = Peer.of(reg, lease=kv.lease)
            if fresh and wid not in self.peers and wid != self.estimator.me:
                self.joined.set()
            self.peers[wid] = peer
            self.orphans.pop(wid, None)
            self.estimator.observe(wid, peer.clock, fresh=fresh)

    def apply_masters(self, item: Snapshot | Batch) -> None:
        """Masters' clocks, from ``<prefix>/masters/``: samples only, never workers."""
        fresh = isinstance(item, Batch)
        if not fresh:
            self.loaded.add("masters")
        for mid, kv in _kv_changes(item, self.masters, self.masters_prefix):
            name = "master:" + mid
            if kv is None or not kv.lease:
                self.masters.discard(mid)
                self.estimator.forget(name)
                continue
            try:
                clock = float(json.loads(kv.value)["clock"])
            except (ValueError, KeyError, TypeError):
                log.error("skipping malformed master presence", master=mid)
                continue
            self.masters.add(mid)
            self.estimator.observe(name, clock, fresh=fresh)

    def alone(self) -> bool:
        """Known to be the only live clock (both tables listed, nobody else in them)."""
        return self.loaded == {"workers", "masters"} and not self.others()

    def others(self) -> int:
        """How many other clocks are live: workers with a registration, and masters."""
        return len(self.peers) - (self.estimator.me in self.peers) + len(self.masters)

    def healthy_for(self, me: str, selector: dict[str, str]) -> bool:
        """Does another worker with a good clock stand ready to claim such a job?"""
        return any(p.id != me and p.can_claim(selector) for p in self.peers.values())

    def list(self) -> list[Peer]:
        return list(self.peers.values())

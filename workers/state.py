"""What a worker knows about the cluster, kept current by list-watches.

Each view applies :class:`Snapshot` (replace everything) and :class:`Batch`
(apply changes) items from :class:`scheduler.etcd.listwatch.ListWatch`, so a
view converges to etcd after reconnects and compactions (invariant I3).
A malformed value is logged and skipped; it never stops the other entries.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from scheduler.etcd.listwatch import Batch, EventKind, Snapshot
from scheduler.keyspace import decode_tick
from scheduler.model import JobSpec
from workers.peers import Peer

log = structlog.get_logger("etcron.worker")

Change = tuple[str, JobSpec | None]


def _changes(
    item: Snapshot | Batch, known: Iterable[str], prefix: str
) -> list[tuple[str, bytes | None]]:
    """(name, value or None when gone) for every key the item touches."""
    if isinstance(item, Snapshot):
        out: list[tuple[str, bytes | None]] = [
            (kv.key[len(prefix) :], kv.value) for kv in item.kvs.values()
        ]
        present = {name for name, _ in out}
        out.extend((name, None) for name in list(known) if name not in present)
        return out
    return [
        (ev.key[len(prefix) :], ev.kv.value if ev.kind is EventKind.PUT else None)
        for ev in item.events
    ]


class JobTable:
    """Valid job specs by name, from ``<prefix>/jobs/``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.jobs: dict[str, JobSpec] = {}
        self.bad: dict[str, str] = {}
        self.revision = 0

    def apply(self, item: Snapshot | Batch) -> list[Change]:
        """Apply an item; return (name, new spec or None if removed) for each change."""
        changed: list[Change] = []
        for name, value in _changes(item, [*self.jobs, *self.bad], self.prefix):
            if value is None:
                self.bad.pop(name, None)
                if self.jobs.pop(name, None) is not None:
                    changed.append((name, None))
                continue
            try:
                spec = JobSpec.from_json(value)
                if spec.name != name:
                    raise ValueError(f"stored under {name!r} but named {spec.name!r}")
            except ValueError as exc:
                self.bad[name] = str(exc)
                log.error("skipping malformed job definition", job=name, error=str(exc))
                if self.jobs.pop(name, None) is not None:
                    changed.append((name, None))
                continue
            self.bad.pop(name, None)
            if self.jobs.get(name) != spec:
                self.jobs[name] = spec
                changed.append((name, spec))
        self.revision = item.revision
        return changed


class TickView:
    """The last claimed tick of each job (epoch ms), from ``<prefix>/ticks/``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ticks: dict[str, int] = {}

    def apply(self, item: Snapshot | Batch) -> None:
        for name, value in _changes(item, self.ticks, self.prefix):
            if value is None:
                self.ticks.pop(name, None)
                continue
            try:
                self.ticks[name] = decode_tick(value)
            except ValueError:
                log.error("skipping malformed tick", job=name, value=value[:40])

    def taken(self, name: str, tick_ms: int) -> bool:
        return self.ticks.get(name, -1) >= tick_ms


class PeerView:
    """Live workers, from ``<prefix>/workers/`` (keys vanish with their lease)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.peers: dict[str, Peer] = {}
        self.received: dict[str, float] = {}

    def apply(self, item: Snapshot | Batch, now: float) -> None:
        for wid, value in _changes(item, self.peers, self.prefix):
            if value is None:
                self.peers.pop(wid, None)
                self.received.pop(wid, None)
                continue
            try:
                self.peers[wid] = Peer.from_json(value)
                self.received[wid] = now
            except (ValueError, KeyError, TypeError):
                log.error("skipping malformed worker registration", worker=wid)

    def skew(self, me: str, now: float) -> float:
        """My clock minus the cluster's median clock, estimated from fresh registrations.

        A peer's published clock is compared with mine when its registration
        arrived (registrations are written right after reading the clock).
        """
        offsets = [0.0]
        for wid, peer in self.peers.items():
            if wid != me and peer.clock and now - self.received.get(wid, 0.0) < 30:
                offsets.append(peer.clock - self.received[wid])
        offsets.sort()
        mid = len(offsets) // 2
        median = offsets[mid] if len(offsets) % 2 else (offsets[mid - 1] + offsets[mid]) / 2
        return -median

    def list(self) -> list[Peer]:
        return list(self.peers.values())

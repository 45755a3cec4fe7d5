"""Live workers and who goes first.

Every worker sees the same registrations under ``workers/``, so every worker
computes the same order for a (job, tick): rendezvous hashing over the live
workers that may run the job. The first waits 0, the k-th waits
``k * handoff_delay`` before claiming, and skips the claim if by then the tick
is already taken (seen through the ``ticks/`` watch, without an etcd write).
Runs spread evenly, and a dead worker's ticks are taken ``handoff_delay`` later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Peer:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    capacity: int = 0
    running: int = 0
    clock: float = 0.0
    draining: bool = False

    @classmethod
    def from_json(cls, data: bytes) -> Peer:
        raw = json.loads(data)
        return cls(
            id=str(raw["id"]),
            labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
            capacity=int(raw.get("capacity", 0)),
            running=int(raw.get("running", 0)),
            clock=float(raw.get("clock", 0.0)),
            draining=bool(raw.get("draining", False)),
        )

    def matches(self, selector: dict[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


def _score(worker_id: str, job: str, tick_ms: int) -> int:
    digest = hashlib.blake2b(f"{worker_id}\x00{job}\x00{tick_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(me: str, peers: list[Peer], job: str, tick_ms: int, selector: dict[str, str]) -> int:
    """My position (0 = first) among the live eligible workers for this (job, tick).

    Workers that do not match the selector, are draining or are full do not
    count. ``me`` is always counted, so a worker that cannot see its own
    registration (etcd slow) still ranks itself.
    """
    mine = _score(me, job, tick_ms)
    ahead = 0
    for p in peers:
        if p.id == me or p.draining or not p.matches(selector):
            continue
        if p.capacity and p.running >= p.capacity:
            continue
        if _score(p.id, job, tick_ms) > mine:
            ahead += 1
    return ahead

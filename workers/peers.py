"""Live workers and who goes first.

Every worker sees the same registrations under ``workers/``, so every worker
computes the same order for a (job, tick): rendezvous hashing over the live
workers that may run the job. The first waits 0, the k-th waits
``k * handoff_delay`` before claiming, and skips the claim if by then the tick
is already taken (seen through the ``ticks/`` watch, without an etcd write).
Runs spread evenly, and a dead worker's ticks are taken ``handoff_delay`` later.

Only workers that can claim count: a registration without a lease (no live
session stands behind it: etcd deletes a leased key with its lease), a worker
whose clock is outside the bound, a draining or full one is passed over, and
the wait is capped at ``MAX_TURN`` turns, so no number of registrations delays
a tick by more than ``MAX_TURN * handoff_delay``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from scheduler.registration import WorkerRegistration


@dataclass(frozen=True, slots=True)
class Peer:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    capacity: int = 0
    running: int = 0
    clock: float = 0.0
    draining: bool = False
    clock_ok: bool = True
    """The worker's own verdict on its clock (see ``workers.cluster_time``)."""
    lease: int = 0
    """The lease its registration hangs on (0: none, a stale or forged key)."""

    @classmethod
    def of(cls, reg: WorkerRegistration, lease: int = 0) -> Peer:
        """The peer a registration describes (``lease``: the one its key hangs on)."""
        return cls(
            id=reg.id,
            labels=dict(reg.labels),
            capacity=reg.capacity or 0,
            running=reg.running or 0,
            clock=reg.clock or 0.0,
            draining=reg.draining,
            clock_ok=reg.clock_ok,
            lease=lease,
        )

    def can_claim(self, selector: dict[str, str]) -> bool:
        """Would this worker compete for a tick of a job with ``selector``?"""
        if self.draining or not self.clock_ok or not self.lease:
            return False
        if self.capacity and self.running >= self.capacity:
            return False
        return self.matches(selector)

    def matches(self, selector: dict[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


def _score(worker_id: str, job: str, tick_ms: int) -> int:
    digest = hashlib.blake2b(f"{worker_id}\x00{job}\x00{tick_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


MAX_TURN = 4
"""No worker waits more than this many turns (of ``handoff_delay``) for a tick."""


def rank(me: str, peers: list[Peer], job: str, tick_ms: int, selector: dict[str, str]) -> int:
    """My position (0 = first, at most ``MAX_TURN``) among the workers that can
    claim this (job, tick) (:meth:`Peer.can_claim`).

    ``me`` is always counted, so a worker that cannot see its own registration
    (etcd slow) still ranks itself.
    """
    mine = _score(me, job, tick_ms)
    ahead = 0
    for p in peers:
        if p.id == me or not p.can_claim(selector):
            continue
        if _score(p.id, job, tick_ms) > mine:
            ahead += 1
            if ahead == MAX_TURN:
                break
    return ahead

"""Cluster time: when to claim and when to start, decided by the cluster's clock.

A worker's host clock may be wrong by any amount (a VM restored from a
snapshot, a bad hardware clock) or step while it runs (an NTP step, an
operator's ``date -s``). Every live worker publishes its host clock in its
registration every few seconds; from those, each worker estimates its own
*offset* (host clock minus cluster clock) and reads time through
:class:`ClusterClock`, which subtracts it.

Rules:

- **The estimate is a median** over this worker (offset 0 to itself) and every
  peer whose registration arrived recently and stands on a live lease. A
  minority of wrong clocks cannot move a median; with two clocks nobody can
  tell which is wrong, so run three workers (or workers and masters).
- **A sample is timed when it arrives**, on the monotonic clock, and mapped to
  the host's wall clock only when the estimate is made: a step of the host
  clock moves every sample with it, so the estimate sees the step at once.
  A registration reaches its readers one commit plus one watch delivery after
  its clock was read; that delay is measured on the worker's own registration
  and taken off every sample, so a slow etcd does not make every clock look
  behind. Delays only ever make a clock look behind, so of the last few
  samples of each clock the least delayed one counts (as NTP filters by the
  shortest round trip).
- **A step keeps cluster time continuous.** ``time()`` compares wall minus
  monotonic with its last reading; a jump of more than ``STEP`` seconds is a
  step: the offset moves by the same amount at once, so the timer neither
  fires an hour of ticks in a burst nor goes silent for an hour. The next
  estimate confirms it from the samples.
- **Unknown is not healthy.** Until a sample of every live peer has arrived,
  a worker that has peers does not know its offset (a registration listed at
  start-up may be seconds old, and a median of two clocks cannot tell which
  is wrong); ``known`` is False and the worker does not claim while a healthy
  peer can (:mod:`workers.eligibility`). Peers re-register as soon as they see a
  new worker join, so this lasts one round trip. A lone worker, with no peer
  to compare with, takes its own clock as the cluster's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from scheduler.clock import Cancellable, Clock

log = structlog.get_logger("etcron.clock")

STEP = 0.25
"""Seconds of jump between wall and monotonic time that count as a clock step."""

FRESH = 10.0
"""A peer's clock sample older than this (monotonic seconds) is not used."""

MAX_LATENCY = 1.0
"""The publish-to-delivery delay taken off samples is capped at this."""

KEEP = 5
"""Samples kept per clock (with registrations every 2 s: the last 10 s)."""


@dataclass(slots=True)
class Sample:
    clock: float
    """The peer's host clock when it wrote its registration."""
    arrived: float
    """Our steady clock (``Clock.steady``: monotonic on a real host) when the
    registration arrived."""


class ClusterClock(Clock):
    """The host clock minus the estimated offset; see the module docstring.

    A wait for an instant of cluster time (``sleep_until``, ``call_at``,
    ``wait``, ``spin_until``) waits for the host instant that corresponds to
    it when the wait begins, as a delay would; the host clock decides when
    that is (the real clock: the event loop; a test clock: the test).
    """

    def __init__(self, host: Clock) -> None:
        self.host = host
        self.offset = 0.0
        """Host clock minus cluster clock, in seconds."""
        self.known = False
        self.steps = 0
        self._base = host.time() - host.steady()

    def time(self) -> float:
        wall = self.host.time()
        base = wall - self.host.steady()
        jump = base - self._base
        self._base = base
        if abs(jump) > STEP:
            self.offset += jump
            self.steps += 1
            log.warning("host clock stepped", step=round(jump, 3), offset=round(self.offset, 3))
        return wall - self.offset

    def monotonic(self) -> float:
        return self.host.monotonic()

    def steady(self) -> float:
        return self.host.steady()

    def _host_instant(self, t: float) -> float:
        """The host clock's reading at cluster instant ``t`` (after noticing a step)."""
        self.time()
        return t + self.offset

    async def sleep_until(self, t: float) -> None:
        await self.host.sleep_until(self._host_instant(t))

    def call_at(self, t: float, callback: Callable[..., object], *args: Any) -> Cancellable:
        return self.host.call_at(self._host_instant(t), callback, *args)

    async def wait(self, event: asyncio.Event, until: float | None, *, cap: float) -> None:
        at = None if until is None else self._host_instant(until)
        await self.host.wait(event, at, cap=cap)

    def spin_until(self, t: float, limit: float) -> None:
        self.host.spin_until(self._host_instant(t), limit)


class OffsetEstimator:
    """Collects the clock samples of peers and estimates this worker's offset.

    A sample can only arrive late, never early, so a delay makes its writer's
    clock look behind. Of each clock's last ``KEEP`` samples the one that
    looks furthest ahead (the least delayed) is used, and of our own
    registrations' the shortest delay: a slow or jittery etcd (commits of
    hundreds of ms) then moves the estimate by the *variation* of the best
    delays over ``FRESH`` seconds, not by every delay.
    """

    def __init__(self, me: str, host: Clock) -> None:
        self.me = me
        self.host = host
        self.samples: dict[str, deque[Sample]] = {}
        self.own: deque[Sample] = deque(maxlen=KEEP)

    def observe(self, worker: str, clock: float, *, fresh: bool) -> None:
        """A registration arrived (``fresh``: by a watch event, not a listing)."""
        if not (fresh and clock):
            return
        sample = Sample(clock, self.host.steady())
        if worker == self.me:
            self.own.append(sample)
        else:
            self.samples.setdefault(worker, deque(maxlen=KEEP)).append(sample)

    def forget(self, worker: str) -> None:
        self.samples.pop(worker, None)

    @property
    def latency(self) -> float:
        """Publish-to-delivery delay, the shortest seen on our own registration."""
        delays = [wall - s.clock for s, wall in self._fresh(self.own)]
        return min(max(min(delays, default=0.0), 0.0), MAX_LATENCY)

    def _fresh(self, samples: deque[Sample]) -> list[tuple[Sample, float]]:
        """(sample, our wall clock when it arrived, mapped to today's wall clock)."""
        now_mono = self.host.steady()
        now_wall = self.host.time()
        return [
            (s, now_wall - (now_mono - s.arrived)) for s in samples if now_mono - s.arrived <= FRESH
        ]

    def estimate(self) -> tuple[float, int] | None:
        """(my offset, clocks used), or None when no recent sample exists."""
        latency = self.latency
        offsets = [0.0]
        for samples in self.samples.values():
            seen = [s.clock - wall for s, wall in self._fresh(samples)]
            if seen:
                offsets.append(max(seen) + latency)
        if len(offsets) == 1:
            return None
        return -_middle(offsets), len(offsets) - 1


def _middle(values: list[float]) -> float:
    """The median; of two middle values, the one nearer 0 (nearer our own clock).

    Averaging them would make two workers an hour apart each believe it is
    half an hour off, and both claim on a wrong clock.
    """
    values = sorted(values)
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return min(values[mid - 1], values[mid], key=abs)

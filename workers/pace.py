"""How far ahead of its tick a claim goes out: it follows etcd's commit time.

A claim should commit before its tick, so that the run starts at the tick.
On a healthy etcd a claim takes milliseconds and ``claim_ahead`` (250 ms) is
plenty; on a leader whose disk turns slow (fsyncs of 100-500 ms) it takes
longer. So the round trip of every claim (including its wait for a group
commit) is measured, and ``ahead`` is 1.5 x the 90th percentile of the last
64, plus 50 ms, between ``claim_ahead`` and :data:`MAX_CLAIM_AHEAD`.

While ``ahead`` is above ``claim_ahead`` the worker is in *slow* mode
(``workers.claimer``): claims of a job go in tick order, a busy claim asks
again every ``ahead / 4`` instead of at the tick, and a tick whose claim was
held up may still be claimed for ``ahead`` after the next one is due.
"""

from __future__ import annotations

from collections import deque

import structlog

log = structlog.get_logger("etcron.worker")

MAX_CLAIM_AHEAD = 2.0
"""Seconds before its tick a claim may be sent at most."""

SAMPLES = 64
RECOMPUTE_EVERY = 16
SLOW_MARGIN = 0.05


class Pace:
    def __init__(self, base: float) -> None:
        self.base = base
        self.ahead = base
        self._latency: deque[float] = deque(maxlen=SAMPLES)
        self._seen = 0

    @property
    def slow(self) -> bool:
        """Are commits slow enough that ``ahead`` has grown past ``claim_ahead``?"""
        return self.ahead > self.base + SLOW_MARGIN

    @property
    def ahead_ms(self) -> int:
        return int(self.ahead * 1000)

    def late_grace_ms(self) -> int:
        """How long after the next tick is due a held-up tick may still be claimed."""
        return self.ahead_ms if self.slow else 0

    def took(self, seconds: float) -> None:
        """One claim's round trip."""
        lat = self._latency
        lat.append(seconds)
        self._seen += 1
        if self._seen % RECOMPUTE_EVERY and len(lat) == lat.maxlen:
            return
        p90 = sorted(lat)[int(0.9 * (len(lat) - 1))]
        ahead = min(MAX_CLAIM_AHEAD, max(self.base, 1.5 * p90 + 0.05))
        if abs(ahead - self.ahead) > SLOW_MARGIN:
            log.info("claim ahead changed", ahead=round(ahead, 3), p90=round(p90, 3))
        self.ahead = ahead

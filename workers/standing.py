"""Whether this worker may take new work: draining, and its clock against the cluster's.

Read by every part that decides: the claimer (may I claim?), membership (what
my registration says, whether I am the one to repair shared keys), and the
worker (``/readyz``).
"""

from __future__ import annotations

from scheduler.config import WorkerConfig
from workers.cluster_time import ClusterClock


class Standing:
    def __init__(self, cfg: WorkerConfig, clock: ClusterClock) -> None:
        self.max_skew = cfg.max_clock_skew
        self.clock = clock
        self.draining = False
        """Set once by a drain (``Worker.stop``/``kill``): no new claims from then on."""

    @property
    def skew(self) -> float:
        """This host's clock minus cluster time, in seconds."""
        return self.clock.offset

    def clock_ok(self) -> bool:
        """Is this worker's clock known to be within ``max_clock_skew`` of the cluster's?

        Not until it was compared with every live clock (``ClusterClock.known``);
        a worker that is alone takes its own clock as the cluster's.
        """
        if not self.clock.known:
            return False
        return abs(self.clock.offset) <= self.max_skew

"""Which jobs this worker may claim now, and who records a job nobody may run.

Capacity and the session are checked apart (``workers.claimer``): a tick waits
through an etcd outage until its deadline, while an ineligible worker never
competes at all.
"""

from __future__ import annotations

from scheduler.config import WorkerConfig
from scheduler.model import JobSpec
from workers.peers import rank
from workers.standing import Standing
from workers.state import PeerView


class Eligibility:
    def __init__(self, cfg: WorkerConfig, standing: Standing, peers: PeerView) -> None:
        self.id = cfg.id
        self.labels = cfg.labels
        self.stop_on_skew = cfg.stop_claiming_on_skew
        self.standing = standing
        self.peers = peers

    def matches(self, job: JobSpec) -> bool:
        """Do this worker's labels satisfy the job's selector?"""
        return all(self.labels.get(k) == v for k, v in job.selector.items())

    def may_claim(self, job: JobSpec) -> bool:
        """Eligible for this job now.

        A worker whose clock is not yet compared with its peers' does not
        claim; one outside ``max_clock_skew`` stands back while a peer with a
        good clock can take the job (invariant I7).
        """
        if self.standing.draining or job.suspend or not self.matches(job):
            return False
        if self.stop_on_skew and not self.standing.clock_ok():
            # a clock not yet compared with the others never claims (it will be
            # within a registration interval); a wrong one only when no worker
            # with a good clock can (it claims on cluster time, corrected)
            known = self.standing.clock.known
            return known and not self.peers.healthy_for(self.id, job.selector)
        return True

    def nobody_eligible(self, job: JobSpec, fire_ms: int) -> bool:
        """Does no live worker match the job's selector, and am I the one (the first
        of all live workers with a good clock) to record its ticks as missed?"""
        standing = self.standing
        if job.suspend or not job.selector or standing.draining or not standing.clock_ok():
            return False
        peers = self.peers.list()
        if self.matches(job) or any(p.lease and p.matches(job.selector) for p in peers):
            return False
        return rank(self.id, peers, job.name, fire_ms, {}) == 0

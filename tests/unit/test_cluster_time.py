"""Cluster time: the offset estimate and clock steps, on a hand-driven clock."""

from __future__ import annotations

import pytest

from scheduler.clock import Clock
from workers.cluster_time import FRESH, ClusterClock, OffsetEstimator


class HandClock(Clock):
    """Wall and monotonic time that only move when told to."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.wall = wall
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s

    def step(self, s: float) -> None:
        self.wall += s


def test_a_step_keeps_cluster_time_continuous() -> None:
    host = HandClock()
    cc = ClusterClock(host)
    t0 = cc.time()
    host.advance(1.0)
    host.step(3600.0)
    assert cc.time() == pytest.approx(t0 + 1.0)
    assert cc.offset == pytest.approx(3600.0)
    assert cc.steps == 1
    host.advance(2.0)
    host.step(-3600.0)
    assert cc.time() == pytest.approx(t0 + 3.0)
    assert cc.offset == pytest.approx(0.0)
    assert cc.steps == 2


def test_slow_drift_is_not_a_step() -> None:
    host = HandClock()
    cc = ClusterClock(host)
    for _ in range(100):
        host.advance(1.0)
        host.step(0.01)  # 10 ms per second: NTP slewing, not a step
        cc.time()
    assert cc.steps == 0
    assert cc.offset == 0.0


def _estimator(host: HandClock, offsets: dict[str, float]) -> OffsetEstimator:
    est = OffsetEstimator("me", host)
    for wid, off in offsets.items():
        est.observe(wid, host.time() + off, fresh=True)
    return est


@pytest.mark.parametrize(
    ("peer_offsets", "mine"),
    [
        ({}, None),  # nobody to compare with
        ({"a": 0.0, "b": 0.0}, 0.0),
        ({"a": -3600.0, "b": -3600.0}, 3600.0),  # I am an hour ahead of both
        ({"a": 3600.0, "b": 0.0}, 0.0),  # one wrong peer cannot move me
        ({"a": 0.7, "b": -0.7}, 0.0),
        ({"a": -0.7, "b": -0.7, "c": -0.7}, 0.7),
        ({"a": -0.7, "b": -0.7, "c": 5.0}, 0.0),  # even count: the middle nearer my clock
        ({"a": 3600.0}, 0.0),  # two clocks: trust my own, never split the difference
    ],
)
def test_the_estimate_is_a_median_a_minority_cannot_move(
    peer_offsets: dict[str, float], mine: float | None
) -> None:
    est = _estimator(HandClock(), peer_offsets)
    got = est.estimate()
    if mine is None:
        assert got is None
    else:
        assert got is not None
        assert got[0] == pytest.approx(mine)
        assert got[1] == len(peer_offsets)


def test_listed_samples_do_not_count_and_old_ones_expire() -> None:
    host = HandClock()
    est = OffsetEstimator("me", host)
    est.observe("a", host.time() - 3600, fresh=False)  # from a listing: published when?
    assert est.estimate() is None
    est.observe("a", host.time() - 3600, fresh=True)
    est.observe("b", host.time() - 3600, fresh=True)
    assert est.estimate() == pytest.approx((3600.0, 2))
    host.advance(FRESH + 1)
    assert est.estimate() is None


def test_a_step_shows_in_the_estimate_at_once() -> None:
    host = HandClock()
    est = _estimator(host, {"a": 0.0, "b": 0.0})
    host.advance(0.5)
    host.step(3600.0)
    got = est.estimate()
    assert got is not None
    assert got[0] == pytest.approx(3600.0)


def test_the_publish_delay_is_taken_off() -> None:
    host = HandClock()
    est = OffsetEstimator("me", host)
    # every registration reaches readers 0.2 s after its clock was read
    est.observe("me", host.time() - 0.2, fresh=True)
    est.observe("a", host.time() - 0.2, fresh=True)
    est.observe("b", host.time() - 0.2, fresh=True)
    got = est.estimate()
    assert got is not None
    assert got[0] == pytest.approx(0.0)


def test_jittery_delays_do_not_move_the_estimate() -> None:
    """Commits of 50 ms to 900 ms (a slow etcd disk): the least delayed sample counts."""
    host = HandClock()
    est = OffsetEstimator("me", host)
    delays = [0.9, 0.05, 0.6, 0.3, 0.8]
    for d in delays:
        # every clock (ours included) is published now and arrives d seconds later
        published = host.time()
        host.advance(d)
        for wid in ("me", "a", "b"):
            est.observe(wid, published, fresh=True)
        host.advance(1.0)
    got = est.estimate()
    assert got is not None
    assert abs(got[0]) < 0.01
    assert est.latency == pytest.approx(0.05, abs=1e-6)

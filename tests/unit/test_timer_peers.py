from __future__ import annotations

import random
from collections import Counter

import pytest

from scheduler.keyspace import Keyspace, decode_tick, encode_tick
from workers.peers import MAX_TURN, Peer, rank
from workers.timer import Timer


def test_timer_pops_in_order_and_respects_reschedule_and_remove() -> None:
    t = Timer()
    t.schedule("a", 300)
    t.schedule("b", 100)
    t.schedule("c", 200)
    t.schedule("a", 50)  # replaces 300
    t.remove("c")
    assert t.next_fire_ms() == 50
    assert t.pop_due(150) == [("a", 50), ("b", 100)]
    assert t.pop_due(10_000) == []
    assert len(t) == 0


def test_timer_heap_stays_bounded_under_churn() -> None:
    t = Timer()
    for i in range(10_000):
        t.schedule(f"j{i % 10}", i)
    assert len(t._heap) <= 4 * 10 + 64 + 1
    assert sorted(t.pop_due(10**9)) == sorted((f"j{i}", 9990 + i) for i in range(10))


def test_rank_is_a_permutation_shared_by_all_workers() -> None:
    peers = [Peer(id=f"w{i}", lease=1) for i in range(5)]
    for tick in range(50):
        ranks = sorted(rank(p.id, peers, "job", tick, {}) for p in peers)
        assert ranks == [0, 1, 2, 3, 4]


def test_rank_spreads_first_place_evenly() -> None:
    peers = [Peer(id=f"w{i}", lease=1) for i in range(3)]
    firsts = Counter(
        next(p.id for p in peers if rank(p.id, peers, f"j{j}", t, {}) == 0)
        for j in range(20)
        for t in range(0, 60_000, 1000)
    )
    assert min(firsts.values()) > 0.25 * sum(firsts.values())


@pytest.mark.parametrize(
    ("peer", "counted"),
    [
        (Peer(id="x", labels={"gpu": "yes"}, lease=1), True),
        (Peer(id="x", labels={"gpu": "no"}, lease=1), False),
        (Peer(id="x", labels={"gpu": "yes"}, draining=True, lease=1), False),
        (Peer(id="x", labels={"gpu": "yes"}, capacity=2, running=2, lease=1), False),
        (Peer(id="x", labels={"gpu": "yes"}, lease=0), False),  # no live session
        (Peer(id="x", labels={"gpu": "yes"}, clock_ok=False, lease=1), False),
    ],
)
def test_rank_ignores_ineligible_peers(peer: Peer, counted: bool) -> None:
    me = "me"
    # find a tick where the peer (as if eligible) outranks me, then check whether it counts
    live = Peer(id="x", lease=1)
    for tick in range(1000):
        if rank(me, [live], "j", tick, {}) == 1:
            break
    assert rank(me, [peer], "j", tick, {"gpu": "yes"}) == (1 if counted else 0)


def test_rank_wait_is_capped_whatever_the_number_of_registrations() -> None:
    peers = [Peer(id=f"w{i:04d}", lease=1) for i in range(1000)]
    ranks = [rank(p.id, peers, "job", 5000, {}) for p in peers]
    assert max(ranks) == MAX_TURN
    assert ranks.count(0) == 1


def test_tick_encoding_sorts_like_time() -> None:
    values = [random.randrange(0, 10**15) for _ in range(200)]
    encoded = sorted(encode_tick(v) for v in values)
    assert [decode_tick(e) for e in encoded] == sorted(values)
    with pytest.raises(ValueError):
        encode_tick(-1)


def test_keyspace_prefix_rules() -> None:
    ks = Keyspace("/cron")
    assert ks.lock("a") == "/cron/lock/a"
    assert ks.run_lock("a", "r") == "/cron/lock/a/r"
    assert not ks.lock("ab").startswith(ks.lock("a") + "/")
    for bad in ("cron", "/cron/", ""):
        with pytest.raises(ValueError):
            Keyspace(bad)

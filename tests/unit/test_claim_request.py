"""The claim request and its fences, without etcd: keyword-only, stateless.

The claim transactions themselves are tested against a real etcd in
tests/integration/test_etcd_layer.py (including a job's first claim, where the
fence key does not exist yet).
"""

from __future__ import annotations

import pytest

from scheduler.etcd.claim_txn import ClaimRequest, TickFence, TriggerFence, holds
from scheduler.etcd.client import KeyValue
from scheduler.keyspace import encode_tick


def _kv(key: str, value: bytes) -> KeyValue:
    return KeyValue(key, value, create_revision=5, mod_revision=7, version=1, lease=0)


def test_claim_request_is_keyword_only() -> None:
    fence = TickFence("t/j", 1000)
    with pytest.raises(TypeError):
        ClaimRequest(fence, None, b"", 0, "r", "runs/j/r", b"{}", None)  # type: ignore[misc]


def test_named_constructors_fill_what_each_claim_needs() -> None:
    fence = TickFence("t/j", 1000)
    missed = ClaimRequest.record_only(fence, run_id="r", record_key="runs/j/r", record_value=b"m")
    assert (missed.lock_key, missed.lock_value, missed.lease, missed.skip_value) == (
        None,
        b"",
        0,
        None,
    )
    tick = ClaimRequest.tick(
        fence,
        lock_key="lock/j",
        lock_value=b"me",
        lease=9,
        run_id="r",
        record_key="runs/j/r",
        record_value=b"running",
        skip_value=b"skipped",
    )
    assert (tick.lock_key, tick.lease, tick.skip_value) == ("lock/j", 9, b"skipped")
    manual = ClaimRequest.manual(
        TriggerFence("trigger/j/q", "taken/j/q"),
        lock_key="lock/j",
        lock_value=b"me",
        lease=9,
        run_id="m",
        record_key="runs/j/m",
        record_value=b"running",
    )
    assert isinstance(manual.fence, TriggerFence) and manual.skip_value is None


def test_tick_fence_is_stateless() -> None:
    """``missing`` says when the compare must change and leaves the fence alone:
    the same answers, however often it is asked."""
    fence = TickFence("t/j", 2000)
    present = [[_kv("t/j", encode_tick(1000))]]
    for _ in range(2):
        assert fence.missing([[]], absent=False)  # no key: compare its absence
        assert not fence.missing([[]], absent=True)
        assert fence.missing(present, absent=True)  # created meanwhile: compare its value
        assert not fence.missing(present, absent=False)
    assert fence.compares(absent=True)[0].create_revision == 0
    assert fence.compares()[0].value == encode_tick(2000)
    assert vars(fence) == {"key": "t/j", "tick_ms": 2000, "value": encode_tick(2000)}


@pytest.mark.parametrize(
    "held",
    [
        b'{"run_id":"r1"}x',  # ours with more after it
        b'x{"run_id":"r1"}',  # ours with more before it
        b'{"run_id":"r1"',  # a prefix of ours
        b'{"run_id":"R1"}',  # same length, other bytes
    ],
)
def test_a_lock_is_ours_only_when_it_holds_exactly_our_bytes(held: bytes) -> None:
    ours = b'{"run_id":"r1"}'
    assert holds([_kv("lock/j", ours)], ours)
    assert not holds([_kv("lock/j", held)], ours)
    assert not holds([], ours)  # no lock at all

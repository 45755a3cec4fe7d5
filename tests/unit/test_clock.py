"""Waits for wall-clock instants: the real clock, the clocks that forward them
(``OffsetClock``, ``ClusterClock``), the launcher, and the test ``ManualClock``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from scheduler.clock import Clock, OffsetClock
from scheduler.etcd.client import KeyValue
from scheduler.etcd.listwatch import Snapshot
from scheduler.keyspace import encode_tick
from tests.support.fakeclock import ManualClock
from workers.cluster_time import ClusterClock
from workers.launch import Launcher
from workers.state import TickView

T0 = 1_800_000_000.0


# the real clock --------------------------------------------------------------


async def test_real_sleep_until_waits_for_the_instant_and_not_for_the_past() -> None:
    clock = Clock()
    t = clock.time() + 0.05
    await clock.sleep_until(t)
    assert clock.time() >= t - 0.002  # the event loop's timers: a millisecond or two
    began = time.monotonic()
    await clock.sleep_until(clock.time() - 10)
    assert time.monotonic() - began < 0.01


async def test_real_call_at_fires_once_and_can_be_cancelled() -> None:
    clock = Clock()
    fired = asyncio.Event()
    kept: list[str] = []
    clock.call_at(clock.time() + 0.03, fired.set)
    clock.call_at(clock.time() + 0.01, kept.append, "cancelled").cancel()
    clock.call_at(clock.time() - 5, kept.append, "past")  # past: soon
    await asyncio.wait_for(fired.wait(), 2)
    assert kept == ["past"]


async def test_real_wait_ends_on_the_event_the_instant_or_the_cap() -> None:
    clock = Clock()
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, event.set)
    began = time.monotonic()
    await clock.wait(event, clock.time() + 5, cap=5)
    assert event.is_set() and time.monotonic() - began < 1
    event.clear()
    began = time.monotonic()
    await clock.wait(event, clock.time() + 0.03, cap=5)  # the instant
    await clock.wait(event, None, cap=0.03)  # no instant: the cap
    await clock.wait(event, clock.time() + 5, cap=0.03)  # the cap comes first
    assert 0.08 <= time.monotonic() - began < 1


def test_real_spin_until_is_bounded_by_real_time() -> None:
    clock = Clock()
    began = time.monotonic()
    clock.spin_until(clock.time() + 3600, 0.01)  # far instant: gives up after the limit
    assert time.monotonic() - began < 0.5
    t = clock.time() + 0.003
    clock.spin_until(t, 1.0)
    assert clock.time() >= t


# the manual clock -------------------------------------------------------------


async def test_manual_clock_fires_in_order_and_only_when_moved() -> None:
    clock = ManualClock(T0)
    order: list[str] = []
    clock.call_at(T0 + 20, order.append, "c")
    clock.call_at(T0 + 10, order.append, "a")
    clock.call_at(T0 + 15, order.append, "cancelled").cancel()

    async def sleeper() -> None:
        await clock.sleep_until(T0 + 12)
        order.append(f"b@{clock.time() - T0:g}")

    task = asyncio.create_task(sleeper())
    await clock.settle()
    assert order == [] and clock.pending() == [T0 + 10, T0 + 12, T0 + 20]
    await clock.advance(19)
    assert order == ["a", "b@12"] and clock.time() == T0 + 19
    await clock.advance_to(T0 + 20)
    assert order == ["a", "b@12", "c"] and task.done()
    assert clock.fired == 3
    with pytest.raises(ValueError, match="does not go back"):
        await clock.advance_to(T0)


async def test_manual_clock_monotonic_is_real_and_steady_follows_the_wall() -> None:
    clock = ManualClock(T0)
    mono, steady = clock.monotonic(), clock.steady()
    await clock.advance(3600)
    assert clock.monotonic() - mono < 1, "leases and timeouts stay real"
    assert clock.steady() - steady == 3600
    clock.step(-30)  # a step moves the wall clock, not the steady one
    assert clock.time() == T0 + 3570 and clock.steady() - steady == 3600


async def test_manual_clock_step_keeps_pending_waits_on_their_steady_instant() -> None:
    clock = ManualClock(T0)
    fired: list[float] = []
    clock.call_at(T0 + 10, lambda: fired.append(clock.time()))
    clock.step(100)  # the wall clock jumps ahead: the timer is still 10 s away
    await clock.advance(5)
    assert fired == []
    await clock.advance(5)
    assert fired == [T0 + 110]


async def test_manual_wait_ends_on_the_event_or_the_instant() -> None:
    clock = ManualClock(T0)
    event = asyncio.Event()
    waiter = asyncio.create_task(clock.wait(event, T0 + 60, cap=30))
    await clock.settle()
    assert not waiter.done()
    event.set()
    await asyncio.wait_for(waiter, 1)
    event.clear()
    waiter = asyncio.create_task(clock.wait(event, T0 + 60, cap=30))
    await clock.advance(60)
    assert waiter.done(), "the instant ends the wait; the real cap (30 s) did not pass"
    await clock.wait(event, T0, cap=30)  # past: at once


async def test_manual_settle_waits_for_the_condition_and_gives_up() -> None:
    state = {"busy": True}
    clock = ManualClock(T0, settled=lambda: not state["busy"])
    asyncio.get_running_loop().call_later(0.02, state.update, {"busy": False})
    await clock.advance(1)
    assert not state["busy"]
    state["busy"] = True
    with pytest.raises(AssertionError, match="did not settle"):
        await clock.settle(timeout=0.05)


async def test_manual_sleeper_keeps_the_clock_unsettled_until_it_resumes() -> None:
    clock = ManualClock(T0)
    seen: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(T0 + 1)
        seen.append(clock.time())
        await clock.sleep_until(T0 + 2)
        seen.append(clock.time())

    task = asyncio.create_task(sleeper())
    await clock.advance(5)
    assert seen == [T0 + 1, T0 + 2] and task.done()
    assert not clock.parks(task)


# forwarding -------------------------------------------------------------------


async def test_offset_clock_waits_for_the_same_instant_of_its_base() -> None:
    base = ManualClock(T0)
    ahead = OffsetClock(10.0, base=base)
    assert ahead.time() == T0 + 10 and ahead.steady() == base.steady()
    fired: list[float] = []
    ahead.call_at(T0 + 15, lambda: fired.append(base.time()))
    task = asyncio.create_task(ahead.sleep_until(T0 + 20))
    await base.advance(5)
    assert fired == [T0 + 5] and not task.done()
    await base.advance(5)
    assert task.done()
    ahead.spin_until(T0 + 21, 0.01)
    assert base.time() == T0 + 11
    assert OffsetClock(2.5).time() == pytest.approx(time.time() + 2.5, abs=0.1)


async def test_cluster_clock_maps_cluster_instants_to_host_instants() -> None:
    host = ManualClock(T0)
    cluster = ClusterClock(host)
    cluster.offset = 2.0  # the host runs 2 s ahead of the cluster
    fired: list[float] = []
    cluster.call_at(T0 + 10, lambda: fired.append(cluster.time()))
    event = asyncio.Event()
    waiter = asyncio.create_task(cluster.wait(event, T0 + 20, cap=30))
    await host.advance(11)
    assert fired == []
    await host.advance(1)
    assert fired == [T0 + 10], "at cluster time T0+10, host time T0+12"
    await host.advance(10)
    assert waiter.done()
    await host.advance(100)  # time passing is not a step
    assert cluster.steps == 0 and cluster.offset == 2.0


async def test_cluster_clock_sees_a_step_of_the_manual_clock() -> None:
    host = ManualClock(T0)
    cluster = ClusterClock(host)
    host.step(3600)
    assert cluster.time() == T0
    assert cluster.steps == 1 and cluster.offset == 3600
    task = asyncio.create_task(cluster.sleep_until(T0 + 5))
    await host.advance(5)
    assert task.done()


async def test_launcher_starts_a_batch_at_the_instant_on_a_manual_clock() -> None:
    clock = ManualClock(T0)
    launcher = Launcher(clock)
    started: list[tuple[str, float]] = []
    at_ms = int((T0 + 60) * 1000)

    def start(name: str) -> Callable[[], None]:
        return lambda: started.append((name, clock.time()))

    tasks = [asyncio.create_task(launcher.at(at_ms, start(n))) for n in "abc"]
    await clock.settle()
    assert started == []
    began = time.monotonic()
    await clock.advance(61)
    assert time.monotonic() - began < 1
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert started == [("a", T0 + 60), ("b", T0 + 60), ("c", T0 + 60)]


async def test_tick_view_waits_until_taken_or_the_instant() -> None:
    clock = ManualClock(T0)
    view = TickView("/p/ticks/")

    def fence(tick_ms: int) -> Snapshot:
        kv = KeyValue("/p/ticks/j", encode_tick(tick_ms), 1, 2, 1, 0)
        return Snapshot(2, {kv.key: kv})

    taken = asyncio.create_task(view.wait_taken("j", 5000, T0 + 1, clock))
    await clock.settle()
    view.apply(fence(5000))
    assert await asyncio.wait_for(taken, 1) is True
    late = asyncio.create_task(view.wait_taken("j", 9000, T0 + 1, clock))
    await clock.advance(1)
    assert late.done() and late.result() is False
    assert await view.wait_taken("j", 9000, T0, clock) is False  # past: at once
    assert await view.wait_taken("j", 4000, T0 + 5, clock) is True

"""The did-not-run detector against a real etcd, on an injected clock: what it
records, what it must never record, and the fence that keeps workers out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.clock import Clock
from scheduler.config import Config, EtcdConfig
from scheduler.etcd.claim_txn import ClaimRequest, Outcome, TickFence, claim
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace, decode_tick, encode_tick
from scheduler.master.didnotrun import NO_RECORD, DidNotRun
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus, from_ms, new_run_id, tick_ms
from tests.support.cluster import put_jobs, runs_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class FixedClock(Clock):
    at: datetime = T0

    def time(self) -> float:
        return self.at.timestamp()


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def every10(name: str, **kw: object) -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "schedule": "@every 10s", "shell": "true", "starting_deadline": "2s", **kw}
    )


async def fence(client: EtcdClient, ks: Keyspace, job: str, at: datetime) -> None:
    await client.put(ks.tick(job), encode_tick(tick_ms(at)))


async def test_only_ticks_after_the_fence_and_past_their_deadline_are_recorded(
    etcd_endpoints: list[str], prefix: str, client: EtcdClient
) -> None:
    ks = Keyspace(prefix)
    clock = FixedClock()
    cfg = Config.model_validate({"notify": {"did_not_run_grace": 1, "did_not_run_max_ticks": 5}})
    missed: list[tuple[str, int]] = []
    leader = asyncio.Event()
    leader.set()
    d = DidNotRun(
        client, ks, cfg, identity="m", is_leader=leader, clock=clock,
        on_missed=lambda job, n: missed.append((job, n)),
    )  # fmt: skip
    await put_jobs(client, ks, every10("ran"), every10("dead"), every10("paused", suspend=True))
    assert await d.sweep() == 0  # first sight of each job: look-back starts now
    # the "ran" job ran every tick (its fence follows); "dead" and "paused" never did
    for job in ("ran", "dead", "paused"):
        await fence(client, ks, job, T0)
    clock.at = T0 + timedelta(seconds=22)  # tick T0+10 is due until T0+13, T0+20 until T0+23
    await fence(client, ks, "ran", T0 + timedelta(seconds=20))
    assert await d.sweep() == 1
    (rec,) = await runs_of(client, ks, "dead")
    assert (rec.tick, rec.status, rec.message) == (T0 + timedelta(seconds=10), "missed", NO_RECORD)
    assert await runs_of(client, ks, "ran") == [] and await runs_of(client, ks, "paused") == []
    assert missed == [("dead", 1)]
    assert await d.sweep() == 0  # idempotent

    # a worker that comes back cannot claim the recorded tick: the fence is past it
    run_id = new_run_id(T0 + timedelta(seconds=10))
    req = ClaimRequest.tick(
        TickFence(ks.tick("dead"), tick_ms(T0 + timedelta(seconds=10))),
        lock_key=ks.lock("dead"),
        lock_value=b"w1",
        lease=0,
        run_id=run_id,
        record_key=ks.run("dead", run_id),
        record_value=b"{}",
    )
    assert (await claim(client, req)).outcome is Outcome.TAKEN

    # a long silence: at most max_ticks records, the last one the latest overdue tick
    # (the 353 ticks between T0+50 and T0+59:50 are counted in its message)
    clock.at = T0 + timedelta(hours=1)
    assert await d.sweep() == 10  # 5 for "dead", 5 for "ran" (silent since T0+20)
    assert len(await runs_of(client, ks, "ran")) == 5
    assert await runs_of(client, ks, "paused") == []
    recs = sorted(await runs_of(client, ks, "dead"), key=lambda r: r.tick)
    ticks = [r.tick - T0 for r in recs]
    assert ticks[:5] == [timedelta(seconds=s) for s in (10, 20, 30, 40, 50)]
    assert ticks[5] == timedelta(minutes=59, seconds=50)
    assert "and about 353 earlier ticks" in recs[5].message
    kv, _ = await client.get(ks.tick("dead"))
    assert kv is not None and decode_tick(kv.value) == tick_ms(
        T0 + timedelta(minutes=59, seconds=50)
    )
    assert len({r.tick for r in recs}) == len(recs)


async def test_a_tick_claimed_meanwhile_is_never_recorded_missed(
    etcd_endpoints: list[str], prefix: str, client: EtcdClient
) -> None:
    """The detector's claim loses to a worker's claim of the same tick: no record."""
    ks = Keyspace(prefix)
    clock = FixedClock()
    leader = asyncio.Event()
    leader.set()
    cfg = Config.model_validate({"notify": {"did_not_run_grace": 1}})
    d = DidNotRun(client, ks, cfg, identity="m", is_leader=leader, clock=clock)
    await put_jobs(client, ks, every10("late"))
    await fence(client, ks, "late", T0)
    await d.sweep()
    clock.at = T0 + timedelta(seconds=15)
    overdue = d.overdue(every10("late"), tick_ms(T0), tick_ms(clock.at))
    assert overdue is not None and overdue.ticks == [tick_ms(T0 + timedelta(seconds=10))]
    # a worker takes that tick (late) just before the detector writes
    tick = T0 + timedelta(seconds=10)
    run_id = new_run_id(tick)
    rec = RunRecord(job="late", run_id=run_id, tick=tick, status=RunStatus.RUNNING, worker="w1")
    req = ClaimRequest.tick(
        TickFence(ks.tick("late"), tick_ms(tick)),
        lock_key=ks.lock("late"),
        lock_value=b"w1",
        lease=0,
        run_id=run_id,
        record_key=ks.run("late", run_id),
        record_value=rec.to_json(),
    )
    assert (await claim(client, req)).outcome is Outcome.WON
    assert await d.sweep() == 0
    assert [r.run_id for r in await runs_of(client, ks, "late")] == [run_id]
    assert from_ms(tick_ms(tick)) == tick

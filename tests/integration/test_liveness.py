"""Liveness (invariant I6/I7) with in-process workers on a real etcd: a daemon
waits for etcd, a worker with a wrong clock stands back, and the others run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from devtools.etcd_process import EtcdCluster
from proof.ledger import overlaps
from proof.ledger import read as read_ledger
from scheduler.clock import OffsetClock
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace, decode_tick, encode_tick
from scheduler.master.presence import publish_presence
from scheduler.runs import RunRecord, RunStatus
from tests.support import wait_for
from tests.support.cluster import (
    ledger_job,
    make_config,
    put_jobs,
    registration,
    runs_of,
    workers,
)
from tests.support.fakeclock import ManualClock, workers_quiet
from workers.accounting import UNCLAIMED
from workers.missed import NO_ELIGIBLE
from workers.pace import SAMPLES
from workers.worker import Worker


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


async def test_worker_started_while_etcd_is_down_waits_then_runs(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", 1)
    cfg = make_config(cluster.endpoints, "/cron", "patient")
    cfg.etcd.connect_timeout = 0.5
    w = Worker(cfg)
    with structlog.testing.capture_logs() as logs:
        starting = asyncio.create_task(w.start(timeout=None))
        try:
            await wait_for(
                lambda: any(e["event"] == "etcd unreachable, waiting" for e in logs), timeout=15
            )
            assert not starting.done(), "the worker gave up instead of waiting for etcd"
            await asyncio.to_thread(cluster.start)
            await asyncio.wait_for(starting, 30)
            assert w.ready.is_set()
        finally:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await w.stop(grace=1)
            await asyncio.to_thread(cluster.stop)
    waiting = [e for e in logs if e["event"] == "etcd unreachable, waiting"]
    assert 1 <= len(waiting) <= 2, "one line per interval, not one per attempt"


async def test_worker_stopped_while_waiting_for_etcd_ends_cleanly(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", 1)  # never started
    cfg = make_config(cluster.endpoints, "/cron", "patient")
    cfg.etcd.connect_timeout = 5
    w = Worker(cfg)
    starting = asyncio.create_task(w.start(timeout=None))
    await wait_for(lambda: w._main is not None)
    w.kill()
    with pytest.raises(RuntimeError, match="stopped during start"):
        await asyncio.wait_for(starting, 5)


async def test_worker_an_hour_ahead_stands_back_and_the_others_run_every_tick(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    await put_jobs(client, ks, ledger_job("tick", ledger))
    clock = ManualClock(datetime(2026, 6, 1, 12, tzinfo=UTC))  # time moves when we say
    good = [Worker(make_config(etcd_endpoints, prefix, f"good{i}"), clock=clock) for i in range(2)]
    bad = Worker(make_config(etcd_endpoints, prefix, "ahead"), clock=OffsetClock(3600, base=clock))
    try:
        await asyncio.gather(*(w.start() for w in good))
        await bad.start()
        reg = await wait_for(
            lambda: _registration(client, ks, "ahead", _skewed),
            timeout=10,
        )
        assert reg["skew"] == pytest.approx(3600, abs=1)
        assert not bad.clock_ok()
        clock.settled = workers_quiet(clock, [*good, bad])
        since = clock.time()
        await clock.advance(5)
        entries = read_ledger(ledger)
        ticks = [
            e.tick_ms / 1000 for e in entries if e.kind == "start" and e.tick_ms / 1000 > since
        ]
        assert ticks == [since + i for i in range(1, 6)], "every tick, once"
        assert {e.worker for e in entries} <= {"good0", "good1"}, "the wrong clock claimed"
        kv, _ = await client.get(ks.tick("tick"))
        assert kv is not None
        assert decode_tick(kv.value) / 1000 < clock.time() + 2, "the fence ran ahead"
        starts = [e.tick_iso for e in entries if e.kind == "start"]
        assert len(starts) == len(set(starts)), "a tick ran twice"
    finally:
        await asyncio.gather(*(w.stop(grace=2) for w in [*good, bad]), return_exceptions=True)


async def test_two_workers_and_a_master_outvote_one_wrong_clock(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    await put_jobs(client, ks, ledger_job("tick", ledger))
    clock = ManualClock(datetime(2026, 6, 1, 12, tzinfo=UTC))  # time moves when we say
    presence = asyncio.create_task(publish_presence(client, ks, "m1", clock))
    good = Worker(make_config(etcd_endpoints, prefix, "good"), clock=clock)
    bad = Worker(make_config(etcd_endpoints, prefix, "ahead"), clock=OffsetClock(3600, base=clock))
    try:
        await wait_for(lambda: _count(client, ks.masters, 1), 10)
        await good.start()
        await bad.start()
        await wait_for(
            lambda: _registration(client, ks, "ahead", _skewed),
            timeout=10,
        )
        # the good worker trusts its clock: the master's agrees with it
        await wait_for(
            lambda: _registration(client, ks, "good", lambda r: r.get("clock_ok") is True), 10
        )
        clock.settled = workers_quiet(clock, [good, bad])
        since = clock.time()
        await clock.advance(3)
        entries = read_ledger(ledger)
        ticks = [
            e.tick_ms / 1000 for e in entries if e.kind == "start" and e.tick_ms / 1000 > since
        ]
        assert ticks == [since + i for i in range(1, 4)], "every tick, once"
        assert {e.worker for e in entries} == {"good"}
    finally:
        await asyncio.gather(*(w.stop(grace=2) for w in [good, bad]), return_exceptions=True)
        presence.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await presence


def _skewed(reg: dict[str, Any]) -> bool:
    """Registered as out of the bound, with the skew measured (not merely unknown yet)."""
    return reg.get("clock_ok") is False and abs(float(reg.get("skew", 0)) - 3600) < 1


async def _registration(client: EtcdClient, ks: Keyspace, wid: str, ok: object) -> object:
    kv, _ = await client.get(ks.worker(wid))
    if kv is None:
        return None
    reg = registration(kv.value)
    return reg if ok(reg) else None  # type: ignore[operator]


async def test_ticks_no_worker_claimed_get_missed_records(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    await put_jobs(client, ks, ledger_job("gap", ledger))
    # the last claim was 5 s ago (every worker was down since): 4 ticks nobody claimed
    last = (int(time.time()) - 5) * 1000
    await client.put(ks.tick("gap"), encode_tick(last))
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        await wait_for(lambda: len(read_ledger(ledger)) >= 2, 10)

        async def missed() -> list[RunRecord]:
            return [r for r in await runs_of(client, ks, "gap") if r.status is RunStatus.MISSED]

        recs = await wait_for(lambda: _at_least(missed, 4), 10)
    ticks = sorted(int(r.tick.timestamp() * 1000) for r in recs)
    assert ticks[:4] == [last + 1000 * i for i in range(1, 5)]
    assert all(r.message.startswith(UNCLAIMED) for r in recs)
    starts = [e.tick_iso for e in read_ledger(ledger) if e.kind == "start"]
    ran = {int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000) for t in starts}
    assert not ran & set(ticks), "a tick both ran and was recorded missed"


async def test_forged_and_stale_keys_are_repaired_and_recorded(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    await put_jobs(client, ks, ledger_job("a", ledger), ledger_job("b", ledger))
    cfgs = [make_config(etcd_endpoints, prefix, f"w{i}") for i in range(2)]
    async with workers(cfgs):
        await wait_for(lambda: {e.job for e in read_ledger(ledger)} == {"a", "b"}, 10)
        kv, _ = await client.get(ks.worker("w0"))
        assert kv is not None
        fake = registration(kv.value)
        for i in range(200):
            fake["id"] = f"fake-{i:04d}"
            await client.put(ks.worker(fake["id"]), json.dumps(fake).encode())
        ghost = b'{"worker":"ghost","run_id":"x","tick":"2026-01-01T00:00:00Z","lease":0}'
        faults = time.time()
        await client.put(ks.lock("a"), ghost)  # no lease: nobody stands behind it
        await client.put(ks.tick("b"), encode_tick(int((time.time() + 3600) * 1000)))

        def ran_after(job: str) -> bool:
            return any(
                e.job == job and e.kind == "start" and e.at > faults for e in read_ledger(ledger)
            )

        await wait_for(lambda: ran_after("a") and ran_after("b"), 10)
        lock_rec = await wait_for(lambda: _get_json(client, ks.repair("lock", "a")), 5)
        fence_rec = await wait_for(lambda: _get_json(client, ks.repair("fence", "b")), 5)
        await wait_for(lambda: _count(client, ks.workers, 2), 10)
        worker_rec = await _get_json(client, ks.repair("worker", "fake-0000"))
    assert lock_rec["value"] == ghost.decode() and lock_rec["writer"] == "ghost"
    assert lock_rec["by"] in {"w0", "w1"}
    assert decode_tick(fence_rec["value"].encode()) > fence_rec["repaired_to"]
    assert worker_rec is not None and worker_rec["kind"] == "worker"
    starts = [(e.job, e.tick_iso) for e in read_ledger(ledger) if e.kind == "start"]
    assert len(starts) == len(set(starts)), "a tick ran twice"


async def _get_json(client: EtcdClient, key: str) -> dict[str, Any] | None:
    kv, _ = await client.get(key)
    return None if kv is None else json.loads(kv.value)  # type: ignore[no-any-return]


async def _count(client: EtcdClient, prefix: str, n: int) -> bool:
    return await client.count_prefix(prefix) == n


async def _at_least(
    fetch: Callable[[], Awaitable[list[RunRecord]]], n: int
) -> list[RunRecord] | None:
    got = await fetch()
    return got if len(got) >= n else None


def _slow_commits(w: Worker, seconds: float = 1.0) -> None:
    """Make the worker's pace believe claims take ``seconds`` (as on a leader with a
    slow disk) for the next ~50 claims: the hand-over's precondition."""
    w.pace._latency.extend([seconds] * SAMPLES)
    w.pace._seen = 15  # the next sample recomputes ahead
    w.pace.took(seconds)
    assert w.pace.slow


async def test_while_commits_are_slow_a_forbid_run_hands_its_lock_to_the_next_tick(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    """Release and next claim in one transaction: consecutive ticks run on one
    worker, each once, in order, never overlapping, with growing tokens."""
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    await put_jobs(client, ks, ledger_job("every", ledger, body="sleep 0.2"))
    cfgs = [make_config(etcd_endpoints, prefix, f"h{i}") for i in range(2)]
    async with workers(cfgs) as ws:
        for w in ws:
            _slow_commits(w)
        await wait_for(lambda: sum(w.stats["handovers"] for w in ws) >= 4, 20)
        suspended = (await client.get(ks.job("every")))[0]
        assert suspended is not None
        spec = json.loads(suspended.value) | {"suspend": True}
        await client.put(ks.job("every"), json.dumps(spec).encode())
        await wait_for(lambda: not any(w.runs for w in ws), 10)
        await wait_for(lambda: _lock_gone(client, ks.lock("every")), 10)
    entries = read_ledger(ledger)
    starts = [e for e in entries if e.kind == "start"]
    ticks = [e.tick_iso for e in starts]
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
    assert not overlaps(entries)
    tokens = [e.token for e in sorted(starts, key=lambda e: e.tick)]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    recs = {r.run_id: r for r in await runs_of(client, ks, "every")}
    assert all(recs[e.run_id].status is RunStatus.SUCCEEDED for e in starts[:-1])
    # the handed-over runs: consecutive seconds, no missed or skipped tick between
    secs = sorted(int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) for t in ticks)
    not_run = [r for r in recs.values() if r.status in (RunStatus.MISSED, RunStatus.SKIPPED)]
    assert not [r for r in not_run if secs[0] < r.tick.timestamp() < secs[-1]]
    assert secs == list(range(secs[0], secs[-1] + 1)), (
        "a tick between the first and last did not run"
    )


async def _lock_gone(client: EtcdClient, key: str) -> bool:
    return (await client.get(key))[0] is None


async def test_ticks_of_a_job_no_worker_can_run_are_recorded_missed_once(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    """A selector that matches no live worker: every tick gets one ``missed`` record
    saying so (by one worker); once a matching worker joins, the job runs there."""
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    await put_jobs(client, ks, ledger_job("ssd-only", ledger, selector={"disk": "ssd"}))
    cfgs = [make_config(etcd_endpoints, prefix, f"plain{i}") for i in range(2)]
    clock = ManualClock(datetime(2026, 6, 1, 12, tzinfo=UTC))  # time moves when we say
    start = clock.time()
    async with workers(cfgs, [clock, clock]) as plain:
        await wait_for(lambda: all("ssd-only" in w.table.jobs for w in plain), 5)
        clock.settled = workers_quiet(clock, plain)
        await clock.advance(5)  # ticks 1..5; a tick's record comes NO_ELIGIBLE_GRACE after it
        recs = [r for r in await runs_of(client, ks, "ssd-only") if r.status is RunStatus.MISSED]
        assert all(r.message.startswith(NO_ELIGIBLE) and "disk=ssd" in r.message for r in recs)
        ticks = sorted(r.tick.timestamp() for r in recs)
        assert ticks == [start + 1, start + 2, start + 3], "each tick recorded once"
        assert not read_ledger(ledger)
        ssd = make_config(etcd_endpoints, prefix, "ssd", labels={"disk": "ssd"})
        async with workers([ssd], [clock]) as joined:
            await wait_for(lambda: "ssd-only" in joined[0].table.jobs, 5)
            await wait_for(joined[0].clock_ok, 10)  # compared with its peers' clocks
            clock.settled = workers_quiet(clock, [*plain, *joined])
            await clock.advance(2)
            assert any(e.kind == "start" for e in read_ledger(ledger))
    assert {e.worker for e in read_ledger(ledger)} == {"ssd"}
    recs = await runs_of(client, ks, "ssd-only")
    ran = {r.tick for r in recs if r.status is not RunStatus.MISSED}
    assert not ran & {r.tick for r in recs if r.status is RunStatus.MISSED}

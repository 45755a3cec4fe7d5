"""Liveness (invariant I6/I7) with in-process workers on a real etcd: a daemon
waits for etcd, a worker with a wrong clock stands back, and the others run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from scheduler.clock import OffsetClock
from scheduler.config import EtcdConfig
from scheduler.devtools.etcd_process import EtcdCluster
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace, decode_tick
from tests.support import wait_for
from tests.support.cluster import ledger_job, make_config, put_jobs, read_ledger, registration
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
    good = [Worker(make_config(etcd_endpoints, prefix, f"good{i}")) for i in range(2)]
    bad = Worker(make_config(etcd_endpoints, prefix, "ahead"), clock=OffsetClock(3600))
    try:
        await asyncio.gather(*(w.start() for w in good))
        await bad.start()
        reg = await wait_for(
            lambda: _registration(client, ks, "ahead", lambda r: r.get("clock_ok") is False),
            timeout=10,
        )
        assert reg["skew"] == pytest.approx(3600, abs=1)
        assert not bad.clock_ok()
        since = time.time()
        await wait_for(
            lambda: (
                len([e for e in read_ledger(ledger) if e.kind == "start" and e.at > since]) >= 5
            ),
            15,
        )
        entries = read_ledger(ledger)
        assert {e.worker for e in entries} <= {"good0", "good1"}, "the wrong clock claimed"
        kv, _ = await client.get(ks.tick("tick"))
        assert kv is not None
        assert decode_tick(kv.value) / 1000 < time.time() + 2, "the fence ran ahead"
        starts = [e.tick for e in entries if e.kind == "start"]
        assert len(starts) == len(set(starts)), "a tick ran twice"
    finally:
        await asyncio.gather(*(w.stop(grace=2) for w in [*good, bad]), return_exceptions=True)


async def _registration(client: EtcdClient, ks: Keyspace, wid: str, ok: object) -> object:
    kv, _ = await client.get(ks.worker(wid))
    if kv is None:
        return None
    reg = registration(kv.value)
    return reg if ok(reg) else None  # type: ignore[operator]

"""Time zones, DST and starting deadlines, on a worker clock the test moves
(``tests/support/fakeclock.py``): no test here waits for real time to pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proof.ledger import read as read_ledger
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.runs import RunRecord, RunStatus
from tests.support import wait_for
from tests.support.cluster import ledger_job, make_config, put_jobs, runs_of, workers
from tests.support.fakeclock import ManualClock, workers_quiet
from workers.worker import Worker

START = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def _settled(clock: ManualClock, ws: list[Worker]) -> list[Worker]:
    clock.settled = workers_quiet(clock, ws)
    return ws


@pytest.mark.parametrize(
    ("zone", "schedule", "clock_at", "expected_tick"),
    [
        # spring forward: 02:30 does not exist in Berlin on 2026-03-29 -> fires once at the jump
        (
            "Europe/Berlin",
            "30 2 * * *",
            datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC),
            "2026-03-29T01:00:00.000Z",
        ),
        # every 15 min in the skipped hour: one fire at the jump, not four
        (
            "Europe/Berlin",
            "*/15 2 * * *",
            datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC),
            "2026-03-29T01:00:00.000Z",
        ),
        # fall back: 02:30 exists twice in Berlin on 2026-10-25 -> the first one
        (
            "Europe/Berlin",
            "30 2 * * *",
            datetime(2026, 10, 25, 0, 29, 58, tzinfo=UTC),
            "2026-10-25T00:30:00.000Z",
        ),
        # New York spring forward 2026-03-08 02:00 -> 03:00 EDT (07:00Z)
        (
            "America/New_York",
            "30 2 * * *",
            datetime(2026, 3, 8, 6, 59, 58, tzinfo=UTC),
            "2026-03-08T07:00:00.000Z",
        ),
        # Lord Howe: a 30-minute shift; 02:00 -> 02:30 on 2026-10-04 (15:30Z on the 3rd)
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            datetime(2026, 10, 3, 15, 29, 58, tzinfo=UTC),
            "2026-10-03T15:30:00.000Z",
        ),
    ],
)
async def test_dst_fires_once_at_the_defined_instant(
    client: EtcdClient,
    etcd_endpoints: list[str],
    prefix: str,
    tmp_path: Path,
    zone: str,
    schedule: str,
    clock_at: datetime,
    expected_tick: str,
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("dst", ledger, schedule=schedule, timezone=zone)
    clock = ManualClock(clock_at)
    async with workers([make_config(etcd_endpoints, prefix, "w1")], [clock]) as ws:
        (w,) = _settled(clock, ws)
        await put_jobs(client, ks, job)
        await wait_for(lambda: "dst" in w.table.jobs, timeout=5)
        await clock.advance(2 * 3600)  # through the whole transition
        nxt = w.timer.next_fire_ms()
    ticks = [e.tick_iso for e in read_ledger(ledger) if e.kind == "start"]
    assert ticks == [expected_tick]
    assert (
        nxt is not None and nxt / 1000 - datetime.fromisoformat(expected_tick).timestamp() > 3600
    ), "the next fire is a later day, not another one in the same transition"


async def test_latest_missed_tick_runs_once_after_full_outage(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("catch", ledger, schedule="*/2 * * * * *", starting_deadline="30s")
    clock = ManualClock(START)
    async with workers([make_config(etcd_endpoints, prefix, "first")], [clock]) as ws:
        _settled(clock, ws)
        await put_jobs(client, ks, job)
        await wait_for(lambda: "catch" in ws[0].table.jobs, timeout=5)
        await clock.advance(4)
        assert len(read_ledger(ledger)) >= 2
    clock.settled = None
    await clock.advance(5)  # the outage: no worker at all
    before = {e.tick_iso for e in read_ledger(ledger) if e.kind == "start"}
    restarted = clock.time()
    async with workers([make_config(etcd_endpoints, prefix, "second")], [clock]):
        await wait_for(lambda: any(e.worker == "second" for e in read_ledger(ledger)), timeout=10)
    after = sorted({e.tick_iso for e in read_ledger(ledger) if e.kind == "start"} - before)
    assert after == [_iso(restarted - 1)], f"only the latest missed tick runs late: {after}"


async def test_tick_past_its_starting_deadline_is_recorded_missed(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("late", ledger, schedule="*/5 * * * * *", starting_deadline="0.5s")
    clock = ManualClock(START)
    async with workers([make_config(etcd_endpoints, prefix, "first")], [clock]) as ws:
        _settled(clock, ws)
        await put_jobs(client, ks, job)
        await wait_for(lambda: "late" in ws[0].table.jobs, timeout=5)
        await clock.advance(5)
        assert _ticks(ledger) == [_iso(START.timestamp() + 5)]

    # the outage spans the next tick; come back 1.5 s after it (past its 0.5 s deadline)
    clock.settled = None
    await clock.advance(6.5)
    async with workers([make_config(etcd_endpoints, prefix, "second")], [clock]):

        async def missed() -> list[RunRecord]:
            return [r for r in await runs_of(client, ks, "late") if r.status is RunStatus.MISSED]

        recs = await wait_for(missed, timeout=10)
    assert [r.tick.timestamp() for r in recs] == [START.timestamp() + 10]
    assert _ticks(ledger) == [_iso(START.timestamp() + 5)], "the late tick did not run"


def _ticks(ledger: Path) -> list[str]:
    return [e.tick_iso for e in read_ledger(ledger) if e.kind == "start"]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_suspended_job_does_not_run_and_resumes(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("pause", ledger, suspend=True)
    clock = ManualClock(START)
    async with workers([make_config(etcd_endpoints, prefix, "w")], [clock]) as ws:
        (w,) = _settled(clock, ws)
        await put_jobs(client, ks, job)
        await wait_for(lambda: "pause" in w.table.jobs, timeout=5)
        await clock.advance(2.5)  # two ticks pass while suspended
        assert read_ledger(ledger) == []
        await put_jobs(client, ks, job.model_copy(update={"suspend": False}))
        await wait_for(lambda: not w.table.jobs["pause"].suspend, timeout=5)
        await clock.advance(1)
        assert _ticks(ledger) == [_iso(START.timestamp() + 3)]

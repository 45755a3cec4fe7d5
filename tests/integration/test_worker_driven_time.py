"""Schedules over days and months, DST and skewed clocks, on a clock the test moves.

Each test runs in-process workers on the real test etcd with a
:class:`tests.support.fakeclock.ManualClock`: the test moves wall time from
instant to instant, and each tick's claim, child and release complete before
time moves on, so a year of schedule takes well under a second of real time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proof.ledger import read as read_ledger
from scheduler.clock import Clock, OffsetClock
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.runs import RunStatus
from tests.support import wait_for
from tests.support.cluster import ledger_job, make_config, put_jobs, runs_of, workers
from tests.support.fakeclock import ManualClock, workers_quiet


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def _utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def _starts(ledger: Path) -> list[str]:
    return [e.tick_iso for e in read_ledger(ledger) if e.kind == "start"]


@pytest.mark.parametrize(
    ("zone", "schedule", "start", "end", "expected"),
    [
        # Berlin springs forward on 2026-03-29: 02:30 does not exist that day -> 03:00 CEST
        (
            "Europe/Berlin",
            "30 2 * * *",
            _utc(2026, 3, 27, 12),
            _utc(2026, 3, 31, 12),
            [
                "2026-03-28T01:30:00.000Z",
                "2026-03-29T01:00:00.000Z",
                "2026-03-30T00:30:00.000Z",
                "2026-03-31T00:30:00.000Z",
            ],
        ),
        # Berlin falls back on 2026-10-25: 02:30 happens twice -> the first one only
        (
            "Europe/Berlin",
            "30 2 * * *",
            _utc(2026, 10, 23, 12),
            _utc(2026, 10, 27, 12),
            [
                "2026-10-24T00:30:00.000Z",
                "2026-10-25T00:30:00.000Z",
                "2026-10-26T01:30:00.000Z",
                "2026-10-27T01:30:00.000Z",
            ],
        ),
        # New York springs forward on 2026-03-08 (02:30 does not exist -> 03:00 EDT)
        (
            "America/New_York",
            "30 2 * * *",
            _utc(2026, 3, 7, 12),
            _utc(2026, 3, 9, 12),
            ["2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z"],
        ),
        # ... and falls back on 2026-11-01: 01:30 happens twice -> the first (EDT) only
        (
            "America/New_York",
            "30 1 * * *",
            _utc(2026, 10, 31, 12),
            _utc(2026, 11, 2, 12),
            ["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"],
        ),
    ],
    ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall"],
)
async def test_daily_job_across_dst_runs_each_day_once(
    client: EtcdClient,
    etcd_endpoints: list[str],
    prefix: str,
    tmp_path: Path,
    zone: str,
    schedule: str,
    start: datetime,
    end: datetime,
    expected: list[str],
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    clock = ManualClock(start)
    async with workers([make_config(etcd_endpoints, prefix, "w1")], [clock]) as ws:
        clock.settled = workers_quiet(clock, ws)
        await put_jobs(client, ks, ledger_job("daily", ledger, schedule=schedule, timezone=zone))
        await wait_for(lambda: "daily" in ws[0].table.jobs, timeout=5)
        real = time.monotonic()
        await clock.advance_to(end)
        took = time.monotonic() - real
    assert _starts(ledger) == expected, "each day's tick once: none twice, none lost"
    records = await runs_of(client, ks, "daily")
    assert sorted(r.status for r in records) == [RunStatus.SUCCEEDED] * len(expected)
    assert took < 5, f"{took:.2f}s of real time for {len(expected)} days"


async def test_monthly_schedule_over_a_year(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    clock = ManualClock(_utc(2026, 12, 15))
    async with workers([make_config(etcd_endpoints, prefix, "w1")], [clock]) as ws:
        clock.settled = workers_quiet(clock, ws)
        await put_jobs(client, ks, ledger_job("monthly", ledger, schedule="0 0 1 * *"))
        await wait_for(lambda: "monthly" in ws[0].table.jobs, timeout=5)
        real = time.monotonic()
        await clock.advance_to(_utc(2027, 12, 15))
        took = time.monotonic() - real
    assert _starts(ledger) == [f"2027-{m:02d}-01T00:00:00.000Z" for m in range(1, 13)]
    assert took < 10, f"{took:.2f}s of real time for a year"


async def test_every_schedule_keeps_its_period_over_long_advances(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    clock = ManualClock(_utc(2026, 6, 1).timestamp() + 0.5)
    async with workers([make_config(etcd_endpoints, prefix, "w1")], [clock]) as ws:
        clock.settled = workers_quiet(clock, ws)
        await put_jobs(client, ks, ledger_job("hourly", ledger, schedule="@every 1h"))
        await wait_for(lambda: "hourly" in ws[0].table.jobs, timeout=5)
        await clock.advance(6 * 3600)
    starts = [datetime.fromisoformat(t).timestamp() for t in _starts(ledger)]
    assert len(starts) == 6, starts
    assert all(b - a == 3600 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(
    ("offsets", "claimers"),
    [
        # one host 2 s behind (an hour ahead: test_liveness): it stands back, the
        # two others run every tick
        ({"w2": -2.0}, {"w0", "w1"}),
        # all within max_clock_skew (0.5 s) of the median: all claim, on cluster time
        ({"w0": 0.3, "w1": -0.3}, None),
    ],
    ids=["one-behind", "within-bound"],
)
async def test_skewed_host_clock_against_its_peers(
    client: EtcdClient,
    etcd_endpoints: list[str],
    prefix: str,
    tmp_path: Path,
    offsets: dict[str, float],
    claimers: set[str] | None,
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    clock = ManualClock(_utc(2026, 6, 1, 12))
    names = ["w0", "w1", "w2"]
    clocks: list[Clock] = [
        OffsetClock(offsets[n], base=clock) if n in offsets else clock for n in names
    ]
    configs = [make_config(etcd_endpoints, prefix, n) for n in names]
    async with workers(configs, clocks) as ws:
        # each worker measures its host's offset from the others' registrations
        await wait_for(
            lambda: all(w.clock.known and abs(w.skew - offsets.get(w.id, 0.0)) < 0.01 for w in ws),
            timeout=10,
        )
        assert [w.clock_ok() for w in ws] == [abs(offsets.get(n, 0)) <= 0.5 for n in names]
        clock.settled = workers_quiet(clock, ws)
        await put_jobs(client, ks, ledger_job("tick", ledger, schedule="*/10 * * * * *"))
        await wait_for(lambda: all("tick" in w.table.jobs for w in ws), timeout=5)
        await clock.advance(60)
    entries = read_ledger(ledger)
    starts = _starts(ledger)
    assert starts == [f"2026-06-01T12:00:{s}0.000Z" for s in range(1, 6)] + [
        "2026-06-01T12:01:00.000Z"
    ], "every tick once, at its instant of cluster time"
    if claimers is not None:
        assert {e.worker for e in entries} <= claimers, "the wrong clock claimed"
    else:
        assert len({e.worker for e in entries}) >= 2, "runs should spread over the workers"
    for r in await runs_of(client, ks, "tick"):
        assert r.start is not None and 0 <= (r.start - r.tick).total_seconds() < 0.01, (
            "started at its tick of cluster time, whatever the host's clock"
        )
    kv, _ = await client.get(ks.tick("tick"))
    assert kv is not None

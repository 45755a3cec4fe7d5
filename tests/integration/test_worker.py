"""The worker against a real etcd: once per tick, no overlap, clean stop (I1, I2, I5)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.procfs import guards_of, running
from proof.ledger import duplicates, overlaps
from proof.ledger import read as read_ledger
from scheduler.clock import Clock, OffsetClock
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunStatus
from tests.support import wait_for
from tests.support.cluster import (
    WorkerProcess,
    ledger_job,
    make_config,
    put_jobs,
    runs_of,
    workers,
)
from tests.support.fakeclock import ManualClock, workers_quiet


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> EtcdClient:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def _ticks(ledger: Path, job: str) -> list[str]:
    return sorted({e.tick_iso for e in read_ledger(ledger) if e.job == job and e.is_start})


def _assert_once_per_tick(ledger: Path) -> None:
    dups = duplicates(read_ledger(ledger))
    assert not dups, f"duplicate runs: {dups}"


async def test_three_workers_run_each_tick_exactly_once(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    jobs = [ledger_job(f"j{i}", ledger) for i in range(3)]
    configs = [make_config(etcd_endpoints, prefix, f"w{i}") for i in range(3)]
    async with workers(configs) as ws:
        await put_jobs(client, ks, *jobs)
        await wait_for(lambda: all(len(_ticks(ledger, j.name)) >= 5 for j in jobs), timeout=20)
    _assert_once_per_tick(ledger)
    entries = read_ledger(ledger)
    for job in jobs:
        ticks = _ticks(ledger, job.name)
        # consecutive seconds between the first and the last tick: nothing missed
        secs = [int(t[17:19]) for t in ticks]
        gaps = [(b - a) % 60 for a, b in itertools.pairwise(secs)]
        assert set(gaps) == {1}, f"{job.name}: ticks {ticks}"
        tokens = [
            e.token
            for e in sorted(entries, key=lambda e: e.tick)
            if e.job == job.name and e.kind == "start"
        ]
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert len({e.worker for e in entries}) >= 2, "runs should spread over workers"
    assert sum(w.stats["seen_taken"] for w in ws) > 0, "losers should skip without a write"


async def test_clock_skew_gives_no_duplicates(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("fast", ledger, body="sleep 0.05")
    configs = [make_config(etcd_endpoints, prefix, f"w{i}") for i in range(3)]
    clock = ManualClock(datetime(2026, 6, 1, 12, tzinfo=UTC))  # time moves when we say
    clocks: list[Clock] = [OffsetClock(0.8, base=clock), OffsetClock(-0.8, base=clock), clock]
    async with workers(configs, clocks) as ws:
        clock.settled = workers_quiet(clock, ws)
        await put_jobs(client, ks, job)
        await wait_for(lambda: all("fast" in w.table.jobs for w in ws), timeout=5)
        await clock.advance(6)
    assert len(_ticks(ledger, "fast")) >= 6
    _assert_once_per_tick(ledger)


async def test_lease_revoked_mid_run_kills_child_before_anyone_else_starts(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    pidfile = tmp_path / "pid"
    job = ledger_job("long", ledger, pre=f"echo $$ > {pidfile}", beats=30)
    configs = [make_config(etcd_endpoints, prefix, f"w{i}") for i in range(2)]
    async with workers(configs) as ws:
        await put_jobs(client, ks, job)
        await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=15)
        holder = next(w for w in ws if w.runs)
        other = next(w for w in ws if w is not holder)
        pid = int(pidfile.read_text())
        assert holder.session is not None
        await client.revoke(holder.session.lease_id)
        await wait_for(lambda: not running(pid), timeout=5)
        # the next run starts elsewhere (or on the holder's new session), never overlapping
        await wait_for(lambda: len(_ticks(ledger, "long")) >= 2, timeout=15)
        assert other.stats["won"] + holder.stats["won"] >= 2
    assert not overlaps(read_ledger(ledger))
    records = await runs_of(client, ks, "long")
    assert any(r.status is RunStatus.LOST for r in records), [r.status for r in records]


async def test_forbid_skips_tick_while_running_and_records_it(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("slow", ledger, beats=2.5)
    async with workers(
        [make_config(etcd_endpoints, prefix, "w1"), make_config(etcd_endpoints, prefix, "w2")]
    ):
        await put_jobs(client, ks, job)

        async def skipped() -> bool:
            return any(r.status is RunStatus.SKIPPED for r in await runs_of(client, ks, "slow"))

        await wait_for(skipped, timeout=15)
    assert not overlaps(read_ledger(ledger))
    records = await runs_of(client, ks, "slow")
    ticks = [r.tick for r in records]
    assert len(ticks) == len(set(ticks)), "one record per tick"


async def test_allow_runs_overlap_and_replace_kills_previous(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    allow = ledger_job("allow", ledger, body="sleep 2.5", concurrency="allow")
    replace = ledger_job("replace", ledger, beats=30, concurrency="replace")
    async with workers(
        [make_config(etcd_endpoints, prefix, "w1"), make_config(etcd_endpoints, prefix, "w2")]
    ):
        await put_jobs(client, ks, allow, replace)

        async def killed() -> bool:
            return any(r.status is RunStatus.KILLED for r in await runs_of(client, ks, "replace"))

        await wait_for(killed, timeout=20)
        await wait_for(
            lambda: (
                len([o for o in overlaps(read_ledger(ledger)) if o[1] in _run_ids(ledger, "allow")])
                > 0
            ),
            timeout=10,
        )
    replace_entries = [e for e in read_ledger(ledger) if e.job == "replace"]
    assert not overlaps(replace_entries), "replace never runs two at once"


def _run_ids(ledger: Path, job: str) -> set[str]:
    return {e.run_id for e in read_ledger(ledger) if e.job == job}


async def test_timeout_retries_and_env(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    out = tmp_path / "attempts"
    flaky = JobSpec(
        name="flaky",
        schedule="@every 3600s",
        shell=f'echo "$ETCRON_ATTEMPT $ETCRON_FENCING_TOKEN" >> {out}; exit 3',
        retries=2,
        retry_backoff="0.1s",
    )
    hang = JobSpec(name="hang", schedule="@every 3600s", command=["sleep", "60"], timeout="0.5s")
    async with workers([make_config(etcd_endpoints, prefix, "w1")]) as (_w,):
        await put_jobs(client, ks, flaky, hang)
        for name in ("flaky", "hang"):
            await client.put(ks.trigger(name, "req1"), b"{}")

        async def final(name: str) -> RunStatus | None:
            recs = await runs_of(client, ks, name)
            return recs[0].status if recs and recs[0].status.final else None

        await wait_for(lambda: final("flaky"), timeout=15)
        await wait_for(lambda: final("hang"), timeout=15)
        assert await final("flaky") is RunStatus.FAILED
        assert await final("hang") is RunStatus.TIMED_OUT
    lines = out.read_text().split()
    assert lines[0::2] == ["1", "2", "3"], "three attempts in the same claim"
    assert len(set(lines[1::2])) == 1 and int(lines[1]) > 0, "one fencing token for all attempts"
    (rec,) = await runs_of(client, ks, "flaky")
    assert rec.exit_code == 3 and rec.attempt == 3 and rec.manual
    # the attempts are told apart: in the message, and by a marker line between them
    assert rec.message == (
        "attempt 1: exit status 3; attempt 2: exit status 3; attempt 3: exit status 3"
    ), rec
    assert rec.output_tail.count("--- etcron: attempt ") == 2, rec.output_tail
    assert "attempt 1 of 3 ended: exit status 3; attempt 2 follows after 100ms" in rec.output_tail


async def test_manual_run_kill_suspend_selector_capacity(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    long = ledger_job("long", ledger, schedule="@every 3600s", body="sleep 60")
    gpu = ledger_job("gpu", ledger, selector={"gpu": "yes"})
    off = ledger_job("off", ledger, suspend=True)
    configs = [
        make_config(etcd_endpoints, prefix, "cpu"),
        make_config(etcd_endpoints, prefix, "gpu", labels={"gpu": "yes"}),
    ]
    async with workers(configs):
        await put_jobs(client, ks, long, gpu, off)
        await client.put(ks.trigger("long", "r1"), b"{}")
        await wait_for(lambda: "long" in {e.job for e in read_ledger(ledger)}, timeout=10)
        await client.put(ks.killer("long"), b"{}")

        async def status() -> RunStatus | None:
            recs = await runs_of(client, ks, "long")
            return recs[0].status if recs and recs[0].status.final else None

        await wait_for(status, timeout=10)
        assert await status() is RunStatus.KILLED
        await wait_for(lambda: len(_ticks(ledger, "gpu")) >= 3, timeout=10)
    entries = read_ledger(ledger)
    assert {e.worker for e in entries if e.job == "gpu"} == {"gpu"}
    assert not [e for e in entries if e.job == "off"]
    taken, _ = await client.get(ks.taken("long", "r1"))
    (ran,) = await runs_of(client, ks, "long")  # either worker may take it (no selector)
    assert taken is not None and f'"{ran.worker}"'.encode() in taken.value, "taken by the runner"


async def test_worker_process_sigkill_next_tick_runs_elsewhere_without_ttl(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("k", ledger, body="sleep 0.5")
    proc = WorkerProcess(
        make_config(etcd_endpoints, prefix, "victim", lease_ttl=30), tmp_path / "victim.log"
    )
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "victim"), timeout=20)
        async with workers([make_config(etcd_endpoints, prefix, "survivor", lease_ttl=30)]):
            await put_jobs(client, ks, job)
            await wait_for(
                lambda: any(e.worker == "victim" for e in read_ledger(ledger)), timeout=20
            )
            proc.signal(signal.SIGKILL)
            proc.wait()
            killed_at = asyncio.get_running_loop().time()
            # the guard revokes the victim's lease: its registration and lock vanish at once
            await wait_for(lambda: _gone(client, ks, "victim"), timeout=5)
            n = len(read_ledger(ledger))
            await wait_for(
                lambda: any(e.worker == "survivor" for e in read_ledger(ledger)[n:]), timeout=5
            )
            assert asyncio.get_running_loop().time() - killed_at < 10, "well inside the 30 s TTL"
    finally:
        proc.close()
    _assert_once_per_tick(ledger)


async def test_worker_process_sigstop_longer_than_ttl_no_overlap(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("pause", ledger, beats=20)
    proc = WorkerProcess(make_config(etcd_endpoints, prefix, "paused"), tmp_path / "paused.log")
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "paused"), timeout=20)
        await put_jobs(client, ks, job)
        await wait_for(lambda: any(e.worker == "paused" for e in read_ledger(ledger)), timeout=20)
        async with workers([make_config(etcd_endpoints, prefix, "other")]):
            proc.signal(signal.SIGSTOP)
            await wait_for(
                lambda: any(e.worker == "other" for e in read_ledger(ledger)), timeout=15
            )
            proc.signal(signal.SIGCONT)
            await wait_for(lambda: _registered(client, ks, "paused"), timeout=15)
    finally:
        proc.close()
    assert not overlaps(read_ledger(ledger)), read_ledger(ledger)


async def _registered(client: EtcdClient, ks: Keyspace, wid: str) -> bool:
    return (await client.get(ks.worker(wid)))[0] is not None


async def _gone(client: EtcdClient, ks: Keyspace, wid: str) -> bool:
    return not await _registered(client, ks, wid)


async def test_sigterm_drains_records_and_revokes(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("drain", ledger, schedule="@every 3600s", body="sleep 1.5")
    proc = WorkerProcess(make_config(etcd_endpoints, prefix, "drainer"), tmp_path / "drainer.log")
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "drainer"), timeout=20)
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("drain", "r1"), b"{}")
        await wait_for(lambda: any(e.job == "drain" for e in read_ledger(ledger)), timeout=10)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.close()
    kinds = [e.kind for e in read_ledger(ledger)]
    assert kinds == ["start", "end"], "the running job finished during the drain"
    (rec,) = await runs_of(client, ks, "drain")
    assert rec.status is RunStatus.SUCCEEDED
    assert (await client.get(ks.lock("drain")))[0] is None
    assert (await client.get(ks.worker("drainer")))[0] is None, "lease revoked"


async def test_malformed_definition_is_skipped_and_others_keep_running(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    async with workers([make_config(etcd_endpoints, prefix, "w1")]) as (w,):
        await client.put(ks.job("broken"), b"{not json")
        await client.put(
            ks.job("wrong"), b'{"name": "wrong", "schedule": "61 * * * *", "shell": "x"}'
        )
        await put_jobs(client, ks, ledger_job("fine", ledger))
        await wait_for(lambda: len(_ticks(ledger, "fine")) >= 2, timeout=10)
        assert set(w.table.bad) == {"broken", "wrong"}
        assert set(w.table.jobs) == {"fine"}


async def test_capacity_limits_concurrent_runs_and_records_what_it_drops(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    jobs = [ledger_job(f"busy{i}", ledger, beats=30) for i in range(2)]
    async with workers([make_config(etcd_endpoints, prefix, "solo", capacity=1)]) as (w,):
        await put_jobs(client, ks, *jobs)

        async def dropped() -> bool:
            for job in jobs:
                recs = await runs_of(client, ks, job.name)
                if any(r.status is RunStatus.MISSED and "capacity" in r.message for r in recs):
                    return True
            return False

        await wait_for(dropped, timeout=15)
        # the tick is dropped while the other job's claim is still in flight (claims
        # in flight count against capacity); its run is registered once the claim returns
        await wait_for(lambda: len(w.runs) == 1, timeout=5)
    started = {e.run_id for e in read_ledger(ledger) if e.kind == "start"}
    assert len(started) == 1, "one run at a time on a worker with capacity 1"


async def test_a_guard_that_dies_is_restarted_and_still_guards(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    pidfile = tmp_path / "pid"
    job = ledger_job("held", ledger, pre=f"echo $$ > {pidfile}", beats=60)
    proc = WorkerProcess(
        make_config(etcd_endpoints, prefix, "guarded", lease_ttl=30), tmp_path / "guarded.log"
    )
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "guarded"), timeout=20)
        await put_jobs(client, ks, job)
        await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20)
        child = int(pidfile.read_text())
        (first,) = guards_of(proc.pid)
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: set(guards_of(proc.pid)) - {first}, timeout=10)
        # the restart is logged once the new guard's pipe holds the lease and the running
        # child: a dead worker is then still cleaned up at once, well inside the 30 s TTL
        await wait_for(
            lambda: b"guard process restarted" in (tmp_path / "guarded.log").read_bytes(),
            timeout=10,
        )
        proc.signal(signal.SIGKILL)
        proc.wait()
        await wait_for(lambda: not running(child), timeout=5)
        await wait_for(lambda: _gone(client, ks, "guarded"), timeout=5)
    finally:
        proc.close()


async def test_replace_requests_stop_only_replace_runs(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    """Workers may write ``replace/<job>`` (they cannot write kill requests): the holder
    honours it only for a ``replace`` job and only for the run it names."""
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    held = ledger_job("held", ledger, schedule="@every 3600s", body="sleep 60")
    swap = ledger_job(
        "swap", ledger, schedule="@every 3600s", body="sleep 60", concurrency="replace"
    )
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        await put_jobs(client, ks, held, swap)
        for name in ("held", "swap"):
            await client.put(ks.trigger(name, "r1"), b"{}")

        async def running(name: str) -> str | None:
            recs = await runs_of(client, ks, name)
            return recs[0].run_id if recs and recs[0].status is RunStatus.RUNNING else None

        held_run = await wait_for(lambda: running("held"), timeout=10)
        swap_run = await wait_for(lambda: running("swap"), timeout=10)
        await client.put(ks.replacing("held"), json.dumps({"run_id": held_run}).encode())
        await client.put(ks.replacing("swap"), json.dumps({"run_id": "someone-else"}).encode())
        await client.put(ks.replacing("swap"), json.dumps({"run_id": swap_run}).encode())

        async def swap_status() -> RunStatus | None:
            recs = await runs_of(client, ks, "swap")
            return recs[0].status if recs and recs[0].status.final else None

        assert await wait_for(swap_status, timeout=10) is RunStatus.KILLED
        # the requests were handled in order: the ones before the last did nothing
        assert await running("held") == held_run

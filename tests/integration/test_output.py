"""Job output: shipped while it runs, followed from elsewhere, bounded; retention."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.config import EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.housekeeping import Housekeeper
from scheduler.model import JobSpec
from scheduler.output_chunks import Segment
from scheduler.output_reader import follow_output, read_output
from scheduler.runs import RunRecord, RunStatus
from tests.support import wait_for
from tests.support.cluster import WorkerProcess, make_config, put_jobs, runs_of, workers


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


async def _final_run(client: EtcdClient, ks: Keyspace, job: str, timeout: float) -> RunRecord:
    async def done() -> RunRecord | None:
        recs = await runs_of(client, ks, job)
        return recs[0] if recs and recs[0].status.final else None

    rec: RunRecord = await wait_for(done, timeout=timeout)
    return rec


async def _first_run(client: EtcdClient, ks: Keyspace, job: str) -> RunRecord:
    async def find() -> RunRecord | None:
        recs = await runs_of(client, ks, job)
        return recs[0] if recs else None

    rec: RunRecord = await wait_for(find, timeout=15)
    return rec


async def test_follow_sees_every_line_in_order_while_running(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(
        name="ticker",
        schedule="@every 3600s",
        shell='for i in $(seq 1 30); do echo "line $i"; echo "err $i" >&2; sleep 0.1; done',
    )
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("ticker", "r"), b"{}")
        rec = await _first_run(client, ks, "ticker")
        follower = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
        lines: list[tuple[str, str, float]] = []
        final: RunRecord | None = None
        try:
            async with asyncio.timeout(20):
                async for item in follow_output(follower, ks, "ticker", rec.run_id):
                    if isinstance(item, Segment):
                        lines += [
                            (item.stream, ln, asyncio.get_running_loop().time())
                            for ln in item.text.splitlines()
                        ]
                    else:
                        final = item
        finally:
            await follower.close()
    assert final is not None and final.status is RunStatus.SUCCEEDED
    out = [ln for s, ln, _ in lines if s == "stdout"]
    err = [ln for s, ln, _ in lines if s == "stderr"]
    assert out == [f"line {i}" for i in range(1, 31)]
    assert err == [f"err {i}" for i in range(1, 31)]
    # live: the first line arrived well before the last (the run takes ~3 s)
    times = [t for s, _, t in lines if s == "stdout"]
    assert times[-1] - times[0] > 1.5


async def test_output_cap_keeps_head_and_tail_with_marker(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(
        name="loud",
        schedule="@every 3600s",
        shell="echo FIRST; head -c 3000000 /dev/zero | tr '\\0' 'x'; echo; echo LAST",
        output_limit="64KiB",
    )
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("loud", "r"), b"{}")

        rec = await _final_run(client, ks, "loud", timeout=20)
    segs = await read_output(client, ks, "loud", rec.run_id)
    text = "".join(s.text for s in segs)
    assert text.startswith("FIRST\n") and text.rstrip().endswith("LAST")
    markers = [s.text for s in segs if s.stream == "etcron"]
    assert len(markers) == 1 and "bytes omitted" in markers[0]
    shipped = sum(len(s.text) for s in segs if s.stream != "etcron")
    assert shipped <= 64 * 1024
    assert rec.output_bytes > 3_000_000 and rec.output_omitted == rec.output_bytes - shipped
    assert rec.output_tail.rstrip().endswith("LAST")


async def test_worker_caps_output_of_a_job_stored_before_the_limit(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    """A job stored with output_limit 100 GiB (before the 16 MiB limit) is still run,
    and keeps at most worker.max_output_limit, not what it asks for."""
    ks = Keyspace(prefix)
    old = {"name": "greedy", "schedule": "@every 3600s", "output_limit": 100 * 1024**3,
           "shell": "echo FIRST; head -c 300000 /dev/zero | tr '\\0' 'x'; echo; echo LAST"}  # fmt: skip
    job = JobSpec.from_json(json.dumps(old))  # as a worker reads it: no write limits
    assert job.output_limit == 100 * 1024**3
    cfg = make_config(etcd_endpoints, prefix, "w1", max_output_limit="32KiB")
    async with workers([cfg]):
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("greedy", "r"), b"{}")
        rec = await _final_run(client, ks, "greedy", timeout=20)
    segs = await read_output(client, ks, "greedy", rec.run_id)
    shipped = sum(len(s.text) for s in segs if s.stream != "etcron")
    assert shipped <= 32 * 1024 and rec.output_bytes > 300_000
    assert rec.status is RunStatus.SUCCEEDED and rec.output_tail.rstrip().endswith("LAST")


async def test_binary_output_is_shown_not_crashed_on(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(name="binary", schedule="@every 3600s", shell="printf 'ok\\377\\376\\000end\\n'")
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("binary", "r"), b"{}")

        rec = await _final_run(client, ks, "binary", timeout=15)
    text = "".join(s.text for s in await read_output(client, ks, "binary", rec.run_id))
    assert text == "ok\\xff\\xfe\x00end\n", rec
    assert rec.status is RunStatus.SUCCEEDED


async def test_killed_worker_output_kept_and_run_marked_lost(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(
        name="victim",
        schedule="@every 3600s",
        shell='for i in $(seq 1 300); do echo "tick $i"; sleep 0.1; done',
    )
    proc = WorkerProcess(
        make_config(etcd_endpoints, prefix, "doomed", lease_ttl=4), tmp_path / "w.log"
    )
    proc.start()
    try:
        await wait_for(lambda: _exists(client, ks.worker("doomed")), timeout=20)
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("victim", "r"), b"{}")
        rec = await _first_run(client, ks, "victim")

        async def some_output() -> bool:
            return "tick 5" in "".join(
                s.text for s in await read_output(client, ks, "victim", rec.run_id)
            )

        await wait_for(some_output, timeout=10)
        proc.signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.close()

    async def lease_gone() -> bool:  # the guard revokes the dead worker's lease
        return not await _exists(client, ks.worker("doomed"))

    await wait_for(lease_gone, timeout=10)
    keeper = Housekeeper(client, ks, MasterConfig(), identity="test")
    report = await keeper.sweep()
    assert report.marked_lost == 1
    (rec,) = await runs_of(client, ks, "victim")
    assert rec.status is RunStatus.LOST
    assert "tick 1\n" in "".join(
        s.text for s in await read_output(client, ks, "victim", rec.run_id)
    )


async def _exists(client: EtcdClient, key: str) -> bool:
    return (await client.get(key))[0] is not None


async def test_retention_keeps_exactly_the_policy(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(name="r", schedule="@daily", shell="true", keep_succeeded=3, keep_failed=2)
    await put_jobs(client, ks, job)
    now = datetime.now(UTC)
    made: dict[str, RunStatus] = {}
    for i in range(20):
        tick = now - timedelta(minutes=60 - i)
        status = RunStatus.SUCCEEDED if i % 3 else RunStatus.FAILED
        if i == 19:
            status = RunStatus.RUNNING
        rid = f"{tick:%Y%m%dT%H%M%S}Z-{i:06x}"
        rec = RunRecord(
            job="r",
            run_id=rid,
            tick=tick,
            status=status,
            start=tick,
            end=tick if status.final else None,
        )
        await client.put(ks.run("r", rid), rec.to_json())
        await client.put(ks.output_chunk("r", rid, 0), b'{"seq":0,"segs":[]}')
        made[rid] = status
    old = now - timedelta(days=30)
    stale = RunRecord(
        job="gone",
        run_id=f"{old:%Y%m%dT%H%M%S}Z-000001",
        tick=old,
        status=RunStatus.SUCCEEDED,
        end=old,
    )
    await client.put(ks.run("gone", stale.run_id), stale.to_json())
    report = await Housekeeper(client, ks, MasterConfig(), identity="t").sweep()
    left = {r.run_id: r.status for r in await runs_of(client, ks, "r")}
    ok = sorted((r for r, s in made.items() if s is RunStatus.SUCCEEDED), reverse=True)[:3]
    bad = sorted((r for r, s in made.items() if s is RunStatus.FAILED), reverse=True)[:2]
    running = [r for r, s in made.items() if s is RunStatus.RUNNING]
    assert set(left) == set(ok + bad + running)
    assert await runs_of(client, ks, "gone") == []
    assert report.deleted == 20 - len(left) + 1
    outputs, _ = await client.get_prefix(ks.outputs + "r/")
    assert {kv.key.split("/")[-2] for kv in outputs} == set(left), "output goes with its record"

"""etcd's quota as a budget, not a cliff: under a NOSPACE alarm claims fail with a
clear message and nothing is corrupted; the elected master frees space, compacts,
defragments and disarms, and claims work again (a real etcd with a small quota)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.etcd_process import EtcdCluster
from scheduler.config import EtcdConfig, MasterConfig
from scheduler.etcd.claim_txn import ClaimRequest, Outcome, TickFence, claim
from scheduler.etcd.client import EtcdClient, EtcdNoSpace
from scheduler.keyspace import Keyspace
from scheduler.master.housekeeping import Housekeeper
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus

QUOTA = 16 * 1024 * 1024
CHUNK = 400 * 1024


def _claim(ks: Keyspace, run: str, tick: int) -> ClaimRequest:
    return ClaimRequest.tick(
        TickFence(ks.tick("keep"), tick),
        lock_key=ks.lock("keep"),
        lock_value=b'{"run_id":"%s"}' % run.encode(),
        lease=0,
        run_id=run,
        record_key=ks.run("keep", run),
        record_value=b"running",
    )


async def _fill(client: EtcdClient, ks: Keyspace) -> list[RunRecord]:
    """Finished runs of job 'noisy' with two output chunks each, until etcd is full."""
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    written: list[RunRecord] = []
    for i in range(200):
        tick = t0 + timedelta(seconds=i)
        rec = RunRecord(
            job="noisy",
            run_id=f"{tick:%Y%m%dT%H%M%S}Z-{i:06x}",
            tick=tick,
            status=RunStatus.SUCCEEDED,
            output_bytes=2 * CHUNK,
            output_chunks=2,
        )
        try:
            for seq in range(2):
                await client.put(ks.output_chunk("noisy", rec.run_id, seq), b"x" * CHUNK)
            await client.put(ks.run("noisy", rec.run_id), rec.to_json())
        except EtcdNoSpace:
            return written
        written.append(rec)
    raise AssertionError("etcd never ran out of space")


@pytest.mark.slow
async def test_nospace_fails_claims_clearly_and_the_leader_recovers(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", 1, extra_args=["--quota-backend-bytes", str(QUOTA)])
    await asyncio.to_thread(cluster.start)
    client = await EtcdClient.connect(EtcdConfig(endpoints=cluster.endpoints))
    ks = Keyspace("/space")
    try:
        spec = JobSpec(name="keep", schedule="* * * * * *", shell="true")
        await client.put(ks.job("keep"), spec.to_json())
        noisy = JobSpec(name="noisy", schedule="@daily", shell="yes | head -c 800000")
        await client.put(ks.job("noisy"), noisy.to_json())
        first = await claim(client, _claim(ks, "r1", 1000))
        assert first.outcome is Outcome.WON
        written = await _fill(client, ks)
        assert len(written) > 5
        assert "NOSPACE" in await client.alarms()
        active = client.active
        with pytest.raises(EtcdNoSpace, match="out of space"):
            await claim(client, _claim(ks, "r2", 2000))
        assert client.active is active, "a full etcd is not a failed member"
        # nothing corrupted: reads work and give what was written
        kv, _ = await client.get(ks.job("keep"))
        assert kv is not None and JobSpec.from_json(kv.value) == spec

        keeper = Housekeeper(
            client,
            ks,
            MasterConfig(
                etcd_quota_bytes=QUOTA, output_budget_bytes=2 * 1024 * 1024, keep_succeeded=5
            ),
            identity="m",
        )
        await keeper.tend()
        assert await client.alarms() == []
        assert keeper.space.last.recovered
        assert keeper.space.last.db_size < 0.9 * QUOTA
        # writes work again, and what was kept is intact
        again = await claim(client, _claim(ks, "r3", 3000))
        assert again.outcome in (Outcome.WON, Outcome.BUSY)
        kv, _ = await client.get(ks.job("keep"))
        assert kv is not None and JobSpec.from_json(kv.value) == spec
        kvs, _ = await client.get_prefix(ks.job_runs("noisy"))
        kept = sorted(RunRecord.from_json(kv.value).run_id for kv in kvs)
        assert kept == sorted(r.run_id for r in written)[-5:]
    finally:
        await client.close()
        await asyncio.to_thread(cluster.stop)


async def test_a_spent_output_budget_keeps_runs_to_their_tail(
    etcd_endpoints: list[str], prefix: str
) -> None:
    """The leader says the output budget is spent (here: the database is past 90 % of
    a quota set below its size); workers then ship no chunks: the record keeps the
    output's tail and counts the rest as omitted. When it is no longer spent, output
    is shipped again."""
    from tests.support import wait_for
    from tests.support.cluster import make_config, put_jobs, runs_of, workers

    ks = Keyspace(prefix)
    client = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    try:
        tight = Housekeeper(client, ks, MasterConfig(etcd_quota_bytes=1), identity="m")
        await tight.space.check()
        assert await tight.space.tell_workers()
        job = JobSpec(name="chatty", schedule="@every 3600s", shell="seq 1 40000")
        await put_jobs(client, ks, job)
        async with workers([make_config(etcd_endpoints, prefix, "b1")]) as (w,):
            await wait_for(lambda: w.budget.spent, timeout=15)
            await client.put(ks.trigger("chatty", "r1"), b"{}")

            async def final(n: int) -> list[RunRecord]:
                recs = [r for r in await runs_of(client, ks, "chatty") if r.status.final]
                return recs if len(recs) >= n else []

            (rec,) = await wait_for(lambda: final(1), timeout=20)
            assert rec.status is RunStatus.SUCCEEDED
            assert rec.output_chunks == 0 and rec.output_omitted == rec.output_bytes > 0
            assert rec.output_tail.rstrip().endswith("40000")
            chunks, _ = await client.get_prefix(ks.run_output("chatty", rec.run_id))
            assert chunks == []

            roomy = Housekeeper(client, ks, MasterConfig(), identity="m")
            await roomy.space.check()
            assert not await roomy.space.tell_workers()
            await wait_for(lambda: not w.budget.spent, timeout=15)
            await client.put(ks.trigger("chatty", "r2"), b"{}")
            recs = await wait_for(lambda: final(2), timeout=20)
            shipped = next(r for r in recs if r.run_id != rec.run_id)
            assert shipped.output_chunks > 0
    finally:
        await client.close()

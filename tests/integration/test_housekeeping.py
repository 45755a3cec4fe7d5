"""Leader-elected housekeeping: one leader among several masters; compaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler.config import EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.housekeeping import Housekeeper
from scheduler.model import JobSpec
from scheduler.runs import RunStatus
from tests.support import wait_for
from tests.support.cluster import make_config, put_jobs, runs_of, workers


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


async def test_one_leader_at_a_time_and_takeover(etcd_endpoints: list[str], prefix: str) -> None:
    ks = Keyspace(prefix)
    cfg = MasterConfig(housekeeping_interval=0.2, compact_interval=3600)
    clients = [await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints)) for _ in range(3)]
    keepers = [Housekeeper(c, ks, cfg, identity=f"m{i}") for i, c in enumerate(clients)]
    tasks = [asyncio.create_task(k.run()) for k in keepers]
    try:
        await wait_for(lambda: any(k.is_leader.is_set() for k in keepers), timeout=10)
        # stays exactly one over several sweeps
        for _ in range(5):
            assert sum(k.is_leader.is_set() for k in keepers) == 1
            await asyncio.sleep(0.1)
        leader = next(i for i, k in enumerate(keepers) if k.is_leader.is_set())
        value, _ = await clients[0].get(ks.leader)
        assert value is not None and value.value == f"m{leader}".encode()
        tasks[leader].cancel()  # that master stops: its session is revoked
        await asyncio.gather(tasks[leader], return_exceptions=True)
        others = [k for i, k in enumerate(keepers) if i != leader]
        await wait_for(lambda: sum(k.is_leader.is_set() for k in others) == 1, timeout=15)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.close()


async def test_compaction_keeps_the_configured_history(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    for i in range(30):
        await client.put(ks.job("churn"), str(i).encode())
    keeper = Housekeeper(
        client, ks, MasterConfig(compact_interval=0, compact_keep_revisions=10), identity="m"
    )
    rev = await client.revision()
    target = await keeper.maybe_compact()
    assert target == rev - 10
    with pytest.raises(Exception, match="compact"):
        await client.get_prefix(ks.jobs, revision=target - 1)
    kvs, _ = await client.get_prefix(ks.jobs, revision=target)
    assert kvs


async def test_full_output_also_kept_in_rotated_local_files(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    logs = tmp_path / "logs"
    job = JobSpec(
        name="local",
        schedule="@every 3600s",
        shell="head -c 5000 /dev/zero | tr '\\0' y",
        output_limit="1KiB",
    )
    cfg = make_config(etcd_endpoints, prefix, "w1", log_dir=str(logs), log_file_count=2)
    async with workers([cfg]):
        await put_jobs(client, ks, job)
        for i in range(3):
            await client.put(ks.trigger("local", f"r{i}"), b"{}")

            async def finished(n: int = i + 1) -> bool:
                return (
                    len(
                        [
                            r
                            for r in await runs_of(client, ks, "local")
                            if r.status is RunStatus.SUCCEEDED
                        ]
                    )
                    >= n
                )

            await wait_for(finished, timeout=15)
    files = sorted((logs / "local").glob("*.log"))
    assert len(files) == 2, "only the newest runs are kept"
    assert all(f.read_bytes() == b"y" * 5000 for f in files), (
        "the local copy is complete despite the 1 KiB cap"
    )


async def test_sweep_deletes_taken_marks_of_requests_that_are_gone(
    client: EtcdClient, prefix: str
) -> None:
    """Workers cannot delete manual-run requests, so the claim marks a request
    ``taken``; the leader deletes a mark once its request has expired, never before."""
    ks = Keyspace(prefix)
    lease, _ = await client.grant(60)
    await client.put(ks.trigger("j", "live"), b"{}", lease=lease)
    await client.put(ks.taken("j", "live"), b'{"worker":"w"}')
    await client.put(ks.taken("j", "expired"), b'{"worker":"w"}')
    keeper = Housekeeper(client, ks, MasterConfig(), identity="m")
    report = await keeper.sweep()
    assert report.taken_cleaned == 1
    assert (await client.get(ks.taken("j", "expired")))[0] is None
    assert (await client.get(ks.taken("j", "live")))[0] is not None, "its request still lives"
    await client.revoke(lease)
    assert (await keeper.sweep()).taken_cleaned == 1
    assert await client.count_prefix(ks.taken_requests) == 0

"""Big data never breaks a listing (issue 12, item 1), with the cases that broke it:
four stored jobs with 1.4 MB descriptions (written before the spec limits existed)
and 1,000 run records with full 4 KiB tails, a fifth of them full of control
characters (which JSON escapes six-fold). The API lists them, history answers,
the leader's sweep runs, and a worker started on top of them becomes ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from scheduler.config import EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.api import create_app
from scheduler.master.housekeeping import Housekeeper
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from scheduler.store import JobStore
from tests.support.cluster import make_config, workers

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def ec(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


async def _fill(ec: EtcdClient, ks: Keyspace) -> None:
    for i in range(4):  # as stored by an older version: straight into etcd
        spec = JobSpec.model_construct(
            name=f"big{i}", schedule="@daily", shell="true", description="d" * 1_400_000
        )
        await ec.put(ks.job(f"big{i}"), spec.model_dump_json(exclude_unset=True).encode())
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    control = "".join(chr(c) for c in range(1, 32)) * 132  # ~4 KiB, escaped six-fold
    for i in range(1000):
        tick = t0 + timedelta(seconds=i)
        rec = RunRecord(
            job="fat",
            run_id=f"{tick:%Y%m%dT%H%M%S}Z-{i:06x}",
            tick=tick,
            status=RunStatus.SUCCEEDED,
            output_tail=control[:4096] if i % 5 == 0 else "x" * 4096,
        )
        await ec.put(ks.run("fat", rec.run_id), rec.to_json())
    await ec.put(ks.job("fat"), JobSpec(name="fat", schedule="@daily", shell="true").to_json())


@pytest.mark.slow
async def test_big_values_never_break_listings(
    ec: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    await _fill(ec, ks)
    app = create_app(JobStore(ec, ks), token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://master") as api:
        r = await api.get("/v1/jobs", headers=AUTH)
        assert r.status_code == 200, r.text[:300]
        names = {j["name"] for j in r.json()["jobs"]} | {j["name"] for j in r.json()["invalid"]}
        assert {f"big{i}" for i in range(4)} | {"fat"} <= names
        # apply plans against every stored job: it reads them all too
        small = {"name": "small", "schedule": "@daily", "shell": "true"}
        r = await api.post("/v1/apply", json={"jobs": [small]}, headers=AUTH)
        assert r.status_code == 200, r.text[:300]
        r = await api.get("/v1/jobs/fat/runs", params={"limit": 1000}, headers=AUTH)
        assert r.status_code == 200
        assert len(r.json()["runs"]) == 1000
    keeper = Housekeeper(ec, ks, MasterConfig(keep_succeeded=10), identity="m")
    report = await keeper.sweep()
    assert report.runs_seen >= 1000 and report.deleted >= 990
    async with workers([make_config(etcd_endpoints, prefix, "fresh")]) as (w,):
        assert w.ready.is_set()
        assert {f"big{i}" for i in range(4)} <= set(w.table.jobs)

"""The dashboard's pages over httpx against a real etcd: paging, filters, run state."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.api import create_app
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from scheduler.store import JobStore
from tests.support.cluster import put_jobs

TOKEN = "ui-pages-token"


@pytest.fixture
async def ec(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


@pytest.fixture
async def ui(ec: EtcdClient, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(JobStore(ec, Keyspace(prefix)), token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://master"
    ) as c:
        r = await c.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303
        yield c


def _names(html: str) -> list[str]:
    return re.findall(r'<td data-label="Name"><a href="/ui/jobs/([^"]+)">', html)


def _record(job: str, minutes: int, status: RunStatus, took: float = 1.0) -> RunRecord:
    tick = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return RunRecord(
        job=job,
        run_id=f"{tick.strftime('%Y%m%dT%H%M%S')}Z-abc{minutes:03d}",
        tick=tick,
        status=status,
        worker="w1",
        start=None if status is RunStatus.SKIPPED else tick,  # a skipped tick never started
        end=None if status is RunStatus.RUNNING else tick + timedelta(seconds=took),
        exit_code=None if status is RunStatus.RUNNING else (0 if status.ok else 1),
    )


async def test_paging_clamps_and_keeps_the_search(
    ui: httpx.AsyncClient, ec: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    await put_jobs(
        ec, ks, *(JobSpec(name=f"j{i:03d}", schedule="@hourly", shell="true") for i in range(120))
    )
    page3 = (await ui.get("/ui/jobs", params={"page": 3})).text
    assert _names(page3) == [f"j{i:03d}" for i in range(100, 120)]
    assert "Page 3 of 3" in page3 and 'rel="next"' not in page3
    assert _names((await ui.get("/ui/jobs", params={"page": 99})).text) == _names(page3)
    found = (await ui.get("/ui/jobs", params={"q": "j0"})).text
    assert "Page 1 of 2" in found and 'href="/ui/jobs?q=j0&amp;page=2"' in found
    assert (await ui.get("/ui/jobs", params={"page": "x"})).status_code == 422


async def test_filters_and_run_state(ui: httpx.AsyncClient, ec: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    await put_jobs(
        ec,
        ks,
        JobSpec(name="needs-ssd", schedule="@hourly", shell="true", selector={"disk": "ssd"}),
        JobSpec(name="paused", schedule="@hourly", shell="true", suspend=True),
        JobSpec(name="broken", schedule="@hourly", shell="false"),
        JobSpec(name="busy", schedule="@hourly", shell="sleep 9"),
    )
    for rec in (
        _record("broken", 1, RunStatus.SUCCEEDED),
        _record("broken", 2, RunStatus.FAILED, 3.0),
        _record("broken", 3, RunStatus.SKIPPED),  # skipped: the failure still counts
        _record("busy", 1, RunStatus.FAILED),
        _record("busy", 2, RunStatus.RUNNING),
    ):
        await ec.put(ks.run(rec.job, rec.run_id), rec.to_json())
    await ec.put(ks.lock("busy"), b'{"worker": "w1"}')
    lease, _ = await ec.grant(30)
    worker = {"id": "w1", "labels": {"disk": "hdd"}, "capacity": 4, "running": 1}
    await ec.put(ks.worker("w1"), json.dumps(worker).encode(), lease=lease)
    try:
        expected = {
            "failing": ["broken", "busy"],  # busy's newest finished run failed
            "running": ["busy"],
            "suspended": ["paused"],
            "no-worker": ["needs-ssd"],
            "": ["broken", "busy", "needs-ssd", "paused"],
            "nonsense": ["broken", "busy", "needs-ssd", "paused"],
        }
        for which, names in expected.items():
            html = (await ui.get("/ui/jobs", params={"filter": which})).text
            assert _names(html) == names, which
        html = (await ui.get("/ui/jobs", params={"q": "broken"})).text
        assert 'class="status muted"' in html and ">skipped</a>" in html  # the newest record
        assert html.count('<i class="') == 3  # recent outcomes: three records
        job = (await ui.get("/ui/jobs/broken")).text
        assert job.count("<rect") == 2  # the skipped tick has no duration
        assert "every hour at :00" in job
        ssd = (await ui.get("/ui/jobs/needs-ssd")).text
        assert "no eligible worker" in ssd
        workers = (await ui.get("/ui/workers")).text
        assert "w1" in workers and "1/4" in workers and "healthy" in workers
        odd = {"id": "w2", "labels": "not-a-map", "draining": True}  # shown, never a 500
        await ec.put(ks.worker("w2"), json.dumps(odd).encode(), lease=lease)
        workers = (await ui.get("/ui/workers")).text
        assert "w2" in workers and "draining" in workers
        assert "no eligible worker" in (await ui.get("/ui/jobs/needs-ssd")).text
        html = (await ui.get("/ui/jobs", params={"filter": "no-worker"})).text
        assert _names(html) == ["needs-ssd"]
    finally:
        await ec.revoke(lease)

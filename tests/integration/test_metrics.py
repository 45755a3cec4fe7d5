"""Prometheus metrics and the worker's health endpoints, over real HTTP, after real runs.

The worker's ``/metrics`` must agree with the run records in etcd; ``/readyz``
follows the session; the master's ``/metrics`` counts API requests by route
template and housekeeping sweeps, and honours ``master.metrics_token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Config, ConfigError, EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.server import leader_housekeeping, run_master
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus, new_run_id
from tests.support import wait_for
from tests.support.cluster import make_config, put_jobs, runs_of, workers
from tests.support.proxy import TcpProxy
from workers.worker import Worker

TOKEN = "api-token-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def parse(text: str) -> Samples:
    """Every sample of the exposition: (name, labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def base(w: Worker) -> str:
    assert w.http is not None
    return f"http://127.0.0.1:{w.http.port}"


async def scrape(url: str, **kw: Any) -> Samples:
    async with httpx.AsyncClient() as http:
        r = await http.get(url, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_metrics_match_the_run_records(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    ok = JobSpec(name="ok", schedule="* * * * * *", shell="echo hello")
    bad = JobSpec(name="bad", schedule="* * * * * *", shell="echo oops >&2; exit 3")
    nowhere = JobSpec(
        name="nowhere", schedule="* * * * * *", shell="true", selector={"zone": "nowhere"}
    )
    async with workers([make_config(etcd_endpoints, prefix, "w1")]) as (w,):
        async with httpx.AsyncClient(base_url=base(w)) as http:
            assert (await http.get("/healthz")).status_code == 200
            r = await http.get("/readyz")
            assert r.status_code == 200 and r.json() == {"ready": True}, r.text
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405

        await put_jobs(client, ks, ok, bad, nowhere)

        async def enough() -> bool:
            recs = [r for j in ("ok", "bad", "nowhere") for r in await runs_of(client, ks, j)]
            seen = Counter((r.job, r.status) for r in recs)
            return (
                seen["ok", RunStatus.SUCCEEDED] >= 3
                and seen["bad", RunStatus.FAILED] >= 3
                and seen["nowhere", RunStatus.MISSED] >= 2
            )

        await wait_for(enough, timeout=30)
        # stop the ticks and let what is in flight land, so records and counters hold still
        await put_jobs(client, ks, *(j.model_copy(update={"suspend": True}) for j in (ok, bad)))
        await put_jobs(client, ks, nowhere.model_copy(update={"suspend": True}))
        await wait_for(lambda: not w.runs and not w.tasks.background_tasks, timeout=10)
        await asyncio.sleep(2.0)  # a no-eligible record is written 1.5 s after its tick
        await wait_for(lambda: not w.runs and not w.tasks.background_tasks, timeout=10)

        records = {j: await runs_of(client, ks, j) for j in ("ok", "bad", "nowhere")}
        m = await scrape(base(w) + "/metrics")

    by_status = Counter((r.job, str(r.status)) for rs in records.values() for r in rs)
    for (job, status), n in by_status.items():
        if status in ("missed", "skipped"):
            continue
        assert value(m, "etcron_runs_total", job=job, status=status) == n, (job, status)
    assert total(m, "etcron_runs_total") == sum(
        n for (_, s), n in by_status.items() if s not in ("missed", "skipped")
    )
    assert value(m, "etcron_runs_total", job="ok", status="succeeded") >= 3
    assert value(m, "etcron_runs_total", job="bad", status="failed") >= 3

    missed = records["nowhere"]
    assert missed and all(r.status is RunStatus.MISSED for r in missed)
    assert all(r.message.startswith("no eligible worker") for r in missed)
    assert value(m, "etcron_ticks_missed_total", job="nowhere", reason="no_eligible_worker") == len(
        missed
    )
    assert total(m, "etcron_ticks_missed_total") == len(missed)

    started = len(records["ok"]) + len(records["bad"])
    assert value(m, "etcron_run_start_lag_seconds_count") == started
    assert value(m, "etcron_run_duration_seconds_count") == started
    assert value(m, "etcron_run_start_lag_seconds_bucket", le="+Inf") == started
    # started at the tick (claimed ahead): well under a second on an idle machine
    assert value(m, "etcron_run_start_lag_seconds_sum") / started < 1.0
    assert value(m, "etcron_output_bytes_total") == sum(
        r.output_bytes for r in records["ok"] + records["bad"]
    )
    assert value(m, "etcron_claims_total", outcome="won") == started
    assert value(m, "etcron_jobs") == 3
    assert value(m, "etcron_runs_running") == 0
    assert value(m, "etcron_worker_capacity") == w.cfg.capacity
    assert value(m, "etcron_worker_ready") == 1
    assert value(m, "etcron_clock_ok") == 1
    assert value(m, "etcron_clock_skew_seconds") == 0.0  # alone: its clock is the cluster's
    assert 0 < value(m, "etcron_session_lease_remaining_seconds") <= w.cfg.lease_ttl
    assert value(m, "etcron_etcd_request_duration_seconds_count", op="txn") >= started
    assert value(m, "etcron_etcd_request_duration_seconds_count", op="keepalive") >= 1
    assert value(m, "etcron_etcd_request_errors_total", op="txn") == 0


async def test_job_series_go_with_the_job(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(name="brief", schedule="* * * * * *", shell="true")
    async with workers([make_config(etcd_endpoints, prefix, "w1")]) as (w,):
        await put_jobs(client, ks, job)
        await wait_for(lambda: w.metrics.runs[("brief", "succeeded")] >= 1, timeout=15)
        m = await scrape(base(w) + "/metrics")
        assert value(m, "etcron_runs_total", job="brief", status="succeeded") >= 1
        await client.delete(ks.job("brief"))
        await wait_for(lambda: "brief" not in w.table.jobs and not w.runs, timeout=10)
        m = await scrape(base(w) + "/metrics")
    assert total(m, "etcron_runs_total", job="brief") == 0
    assert not [k for k in m if dict(k[1]).get("job") == "brief"]


async def test_readyz_before_ready_and_after_the_session_is_lost(
    etcd_endpoints: list[str], prefix: str
) -> None:
    # before ready: etcd unreachable, the listener answers all the same
    dead = make_config([f"127.0.0.1:{_free_port()}"], prefix, "early")
    early = Worker(dead)
    starting = asyncio.create_task(early.start(timeout=30))
    try:
        await wait_for(lambda: early.http is not None and early.http.port, timeout=10)
        async with httpx.AsyncClient(base_url=base(early)) as http:
            assert (await http.get("/healthz")).status_code == 200
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json() == {
                "ready": False,
                "reason": "no etcd session",
            }, r.text
            m = parse((await http.get("/metrics")).text)
            assert value(m, "etcron_worker_ready") == 0
            assert value(m, "etcron_session_lease_remaining_seconds") == 0
    finally:
        early.kill()
        with contextlib.suppress(RuntimeError):
            await starting

    # ready, then etcd cut off: the session is lost and /readyz says so
    host, port = etcd_endpoints[0].rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    try:
        cfg = make_config([proxy.address], prefix, "cut", lease_ttl=2, lease_margin=0.5)
        etcd = EtcdConfig(endpoints=[proxy.address], prefix=prefix, request_timeout=0.5)
        cfg = cfg.model_copy(update={"etcd": etcd})
        async with workers([cfg]) as (w,), httpx.AsyncClient(base_url=base(w)) as http:
            assert (await http.get("/readyz")).status_code == 200
            await proxy.cut()

            async def not_ready() -> httpx.Response | None:
                r = await http.get("/readyz")
                return r if r.status_code == 503 else None

            r = await wait_for(not_ready, timeout=15)
            assert r.json() == {"ready": False, "reason": "no etcd session"}, r.text
            assert (await http.get("/healthz")).status_code == 200
            m = parse((await http.get("/metrics")).text)
            assert value(m, "etcron_worker_ready") == 0
            await proxy.restore()
            await wait_for(lambda: w.readiness() == "", timeout=20)
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await proxy.stop()


async def test_a_busy_worker_listen_port_is_a_config_error(
    etcd_endpoints: list[str], prefix: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        w = Worker(make_config(etcd_endpoints, prefix, "busy", listen=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError) as err:
            await w.start(timeout=10)
        assert str(err.value) == (
            f"worker.listen 127.0.0.1:{port}: cannot listen: Address already in use; "
            "set worker.listen to a free host:port, or off"
        )
    off = Worker(make_config(etcd_endpoints, prefix, "off", listen="off"))
    await off.start(timeout=20)
    try:
        assert off.http is None
    finally:
        await off.stop(grace=1)


@contextlib.asynccontextmanager
async def master(cfg: Config) -> AsyncIterator[str]:
    ready = asyncio.Event()
    task = asyncio.create_task(run_master(cfg, ready=ready, housekeeping=leader_housekeeping))
    try:
        async with asyncio.timeout(20):
            await ready.wait()
        yield f"http://{cfg.master.listen}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_master_metrics(client: EtcdClient, etcd_endpoints: list[str], prefix: str) -> None:
    ks = Keyspace(prefix)
    await put_jobs(client, ks, JobSpec(name="a", schedule="@every 1h", shell="true"))
    # a run still "running" on a lease that does not exist: the sweep marks it lost
    tick = datetime.now(UTC)
    orphan = RunRecord(
        job="a",
        run_id=new_run_id(tick),
        tick=tick,
        status=RunStatus.RUNNING,
        worker="gone",
        lease=0x7E57,
        start=tick,
    )
    await client.put(ks.run("a", orphan.run_id), orphan.to_json())
    cfg = Config(
        etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix),
        master=MasterConfig(
            listen=f"127.0.0.1:{_free_port()}",
            token=TOKEN,
            housekeeping_interval=0.5,
            etcd_quota_bytes="3GiB",
        ),
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with master(cfg) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/v1/jobs")).status_code == 401
        assert (await http.get("/v1/jobs", headers=auth)).status_code == 200
        assert (await http.get("/v1/jobs/a", headers=auth)).status_code == 200
        assert (await http.get("/v1/jobs/zz", headers=auth)).status_code == 404
        assert (await http.get("/no/such/path", headers=auth)).status_code == 404

        async def swept() -> Samples | None:
            m = await scrape(url + "/metrics")  # no token needed
            return m if value(m, "etcron_housekeeping_runs_marked_lost_total") >= 1 else None

        m = await wait_for(swept, timeout=20)
        assert (await runs_of(client, ks, "a"))[0].status is RunStatus.LOST
    req = "etcron_api_requests_total"
    # refused before routing (the HTTP guard checks the token first): no route label
    assert value(m, req, route="unmatched", method="GET", code="401") == 1
    assert value(m, req, route="/v1/jobs", method="GET", code="200") == 1
    assert value(m, req, route="/v1/jobs/{name}", method="GET", code="200") == 1
    assert value(m, req, route="/v1/jobs/{name}", method="GET", code="404") == 1
    assert value(m, req, route="unmatched", method="GET", code="404") == 1
    assert not [k for k in m if dict(k[1]).get("route", "").endswith(("/a", "/zz"))]
    assert value(m, "etcron_api_request_duration_seconds_count", route="/v1/jobs") == 1
    assert value(m, "etcron_master_leader") == 1
    assert value(m, "etcron_housekeeping_sweeps_total", result="ok") >= 1
    assert value(m, "etcron_housekeeping_sweep_duration_seconds_count") >= 1
    assert value(m, "etcron_housekeeping_runs_marked_lost_total") == 1
    assert value(m, "etcron_jobs") == 1
    assert value(m, "etcron_etcd_up") == 1
    assert value(m, "etcron_etcd_db_size_bytes") > 0
    assert value(m, "etcron_etcd_quota_bytes") == 3 * 1024**3
    assert value(m, "etcron_etcd_nospace_alarm") == 0
    assert value(m, "etcron_etcd_request_duration_seconds_count", op="status") >= 1


async def test_master_metrics_token(etcd_endpoints: list[str], prefix: str) -> None:
    cfg = Config(
        etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix),
        master=MasterConfig(
            listen=f"127.0.0.1:{_free_port()}", token=TOKEN, metrics_token="scrape-me"
        ),
    )
    async with master(cfg) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.get("/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        api = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/metrics", headers=api)).status_code == 401
        r = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200
        assert value(parse(r.text), "etcron_etcd_up") == 1
        # the API's own token rules are unchanged
        assert (await http.get("/v1/health")).status_code == 200
        assert (await http.get("/v1/jobs")).status_code == 401

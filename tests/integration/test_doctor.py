"""``etcron doctor`` against the real test etcd and real workers."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.clock import Clock, OffsetClock
from scheduler.config import Config, EtcdConfig
from scheduler.doctor.report import Report, Status
from scheduler.doctor.run import run_doctor
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import LockValue
from tests.integration.test_cli import _env, cli
from tests.support import wait_for
from tests.support.cluster import make_config, put_jobs, registration, workers

NEVER = "0 0 1 1 *"  # a schedule that does not fire during a test


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed once the socket is


def _config_file(tmp_path: Path, endpoints: list[str], prefix: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"etcd": {"endpoints": endpoints, "prefix": prefix}}))
    return path


def _by_name(report: Report) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


async def _settled(client: EtcdClient, ks: Keyspace, ids: set[str]) -> list[dict[str, Any]]:
    """The registrations of ``ids`` once each has compared its clock with its peers."""

    async def ready() -> list[dict[str, Any]] | None:
        kvs, _ = await client.get_prefix(ks.workers)
        regs = [registration(kv.value) for kv in kvs]
        if {r["id"] for r in regs} == ids and all(r.get("clock_known") for r in regs):
            return regs
        return None

    regs: list[dict[str, Any]] = await wait_for(ready, timeout=20)
    return regs


async def test_healthy_cluster_is_all_ok_and_exits_0(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    cfgs = [
        make_config(etcd_endpoints, prefix, "w1", labels={"disk": "ssd"}),
        make_config(etcd_endpoints, prefix, "w2"),
    ]
    await put_jobs(
        client,
        ks,
        JobSpec(name="backup", schedule=NEVER, command=["true"], selector={"disk": "ssd"}),
        JobSpec(name="report", schedule=NEVER, command=["true"]),
    )
    async with workers(cfgs):
        await _settled(client, ks, {"w1", "w2"})
        path = _config_file(tmp_path, etcd_endpoints, prefix)
        text = await cli("doctor", "--config", str(path), env=_env())
        as_json = await cli("doctor", "--config", str(path), "-o", "json", env=_env())
    assert text.code == 0, text.out + text.err
    lines = text.out.splitlines()
    assert lines and all(line.startswith("OK") for line in lines), text.out
    names = [line.split(": ", 1)[0].split(None, 1)[1] for line in lines]
    for expected in (
        "config", f"endpoint {etcd_endpoints[0]}", "auth", "etcd space", "etcd alarms",
        "workers", "clock w1", "clock w2", "versions", "locks", "jobs", "notifications",
    ):  # fmt: skip
        assert expected in names, (expected, text.out)
    assert "2 jobs" in text.out
    data = json.loads(as_json.out)
    assert as_json.code == 0 and data["ok"] is True and data["exit_code"] == 0
    assert {c["status"] for c in data["checks"]} == {"OK"}
    assert data["counts"] == {"OK": len(data["checks"]), "WARN": 0, "FAIL": 0}


async def test_skewed_worker_is_reported_and_exits_1(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    cfgs = [make_config(etcd_endpoints, prefix, w) for w in ("w1", "w2", "w3")]
    clocks: list[Clock] = [Clock(), Clock(), OffsetClock(5.0)]  # w3 runs 5 s ahead
    async with workers(cfgs, clocks):

        async def w3_stands_back() -> bool:
            regs = await _settled(client, ks, {"w1", "w2", "w3"})
            w3 = next(r for r in regs if r["id"] == "w3")
            return w3["clock_ok"] is False and w3["skew"] > 4

        await wait_for(w3_stands_back, timeout=20)
        report = await run_doctor(Config(etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix)))
    checks = _by_name(report)
    assert checks["clock w3"].status is Status.FAIL, checks["clock w3"]
    skew = re.search(r"skew ([-+][0-9.]+)s is outside", checks["clock w3"].detail)
    assert skew and 4.5 < float(skew.group(1)) < 5.5, checks["clock w3"]
    assert "max_clock_skew" in checks["clock w3"].detail
    assert checks["clock w1"].status is Status.OK and checks["clock w2"].status is Status.OK
    assert report.exit_code == 1


async def test_unreachable_endpoint_exits_1_and_none_reachable_exits_3(
    etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    closed = _closed_port()
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        cfg = Config(etcd=EtcdConfig(endpoints=[*etcd_endpoints, closed], prefix=prefix))
        began = time.monotonic()
        report = await run_doctor(cfg, timeout=2.0)
        took = time.monotonic() - began
    checks = _by_name(report)
    assert checks[f"endpoint {closed}"].status is Status.FAIL
    assert "unreachable" in checks[f"endpoint {closed}"].detail
    assert checks[f"endpoint {etcd_endpoints[0]}"].status is Status.OK
    assert checks["workers"].status is Status.OK  # the rest was still checked
    assert report.exit_code == 1
    assert took < 10, f"a closed port held the run for {took:.1f}s"

    path = _config_file(tmp_path, [closed], prefix)
    res = await cli("doctor", "--config", str(path), "--timeout", "1", env=_env())
    assert res.code == 3, res.out + res.err
    assert f"FAIL  endpoint {closed}: unreachable" in res.out
    assert "FAIL  cluster: no endpoint answered a read" in res.out


async def test_invalid_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("etcd:\n  endpoints: [127.0.0.1:2379]\n  colour: blue\n")
    res = await cli("doctor", "--config", str(path), env=_env())
    assert res.code == 2, res.out + res.err
    assert res.out.startswith("FAIL  config:") and "etcd.colour" in res.out


async def test_stale_and_orphaned_locks_are_found(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    cfg = Config(etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix))
    value = LockValue(
        worker="gone",
        run_id="20260101T000000Z-abc123",
        tick=datetime(2026, 1, 1, tzinfo=UTC),
        lease=0,
    ).to_json()

    # a lock on a live lease that no worker's registration shows: goes with its lease
    lease, _ = await client.grant(60)
    await client.put(ks.lock("held"), value, lease=lease)
    report = await run_doctor(cfg)
    locks = _by_name(report)["locks"]
    assert locks.status is Status.WARN and "held (lease" in locks.detail, locks

    # its lease revoked: etcd deletes the lock with it, nothing is left to report
    await client.revoke(lease)
    report = await run_doctor(cfg)
    assert _by_name(report)["locks"].status is Status.OK

    # a lock with no lease: nothing will ever release it
    await client.put(ks.lock("backup"), value)
    report = await run_doctor(cfg)
    locks = _by_name(report)["locks"]
    assert locks.status is Status.FAIL and "backup (no lease)" in locks.detail, locks
    assert report.exit_code == 1


async def test_job_no_live_worker_can_run_is_found(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    await put_jobs(
        client,
        ks,
        JobSpec(name="gpu", schedule=NEVER, command=["true"], selector={"gpu": "a100"}),
        JobSpec(
            name="parked", schedule=NEVER, command=["true"], selector={"gpu": "h100"}, suspend=True
        ),
        JobSpec(name="web", schedule=NEVER, command=["true"], selector={"zone": "a"}),
    )
    async with workers([make_config(etcd_endpoints, prefix, "w1", labels={"zone": "a"})]):
        await _settled(client, ks, {"w1"})
        report = await run_doctor(Config(etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix)))
    jobs = _by_name(report)["jobs"]
    assert jobs.status is Status.FAIL, jobs
    assert "gpu (selector gpu=a100)" in jobs.detail and "no eligible worker" in jobs.detail
    assert "parked" not in jobs.detail and "web" not in jobs.detail
    assert report.exit_code == 1


async def test_mixed_versions_are_reported(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    async with workers([make_config(etcd_endpoints, prefix, "w1")]):
        await _settled(client, ks, {"w1"})
        lease, _ = await client.grant(60)
        old = {"id": "m-old", "clock": time.time(), "version": "0.0.1"}
        await client.put(ks.master("m-old"), json.dumps(old).encode(), lease=lease)
        report = await run_doctor(Config(etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix)))
        await client.revoke(lease)
    versions = _by_name(report)["versions"]
    assert versions.status is Status.WARN, versions
    assert "0.0.1 (master m-old)" in versions.detail and "(worker w1)" in versions.detail
    assert report.exit_code == 1

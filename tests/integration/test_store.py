"""JobStore against a real etcd: CAS, read-modify-write, plan/apply, bad values, requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from scheduler.audit import list_entries
from scheduler.clock import OffsetClock
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.job_apply import BATCH, BATCH_BYTES, Plan
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.run_requests import StopRequest
from scheduler.runs import RunRecord, RunStatus
from scheduler.store import ConflictError, JobNotFound, JobStore


def job(name: str, **kw: object) -> JobSpec:
    data: dict[str, object] = {"name": name, "schedule": "*/5 * * * *", "shell": f"echo {name}"}
    data.update(kw)
    return JobSpec.model_validate(data)


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


@pytest.fixture
def store(client: EtcdClient, prefix: str) -> JobStore:
    return JobStore(client, Keyspace(prefix))


async def test_put_get_delete_with_cas(store: JobStore) -> None:
    rev = await store.put_job(job("a"), expect_mod_revision=0)
    found = await store.get_job("a")
    assert found is not None and found[0] == job("a") and found[1] == rev

    with pytest.raises(ConflictError, match="already exists") as info:
        await store.put_job(job("a", shell="other"), expect_mod_revision=0)
    assert info.value.jobs == ["a"]
    with pytest.raises(ConflictError, match="mod revision"):
        await store.put_job(job("a", shell="other"), expect_mod_revision=rev - 1)
    assert (await store.get_job("a")) == (job("a"), rev)  # nothing changed

    rev2 = await store.put_job(job("a", shell="new"), expect_mod_revision=rev)
    assert rev2 > rev
    with pytest.raises(ConflictError):
        await store.delete_job("a", expect_mod_revision=rev)
    assert await store.delete_job("a", expect_mod_revision=rev2)
    assert await store.get_job("a") is None
    assert not await store.delete_job("a")


async def test_concurrent_update_job_calls_all_land(store: JobStore) -> None:
    await store.put_job(job("shared"))
    calls = 0

    def add_label(key: str):  # type: ignore[no-untyped-def]
        def fn(spec: JobSpec) -> JobSpec:
            nonlocal calls
            calls += 1
            return spec.model_copy(update={"labels": {**spec.labels, key: "1"}})

        return fn

    keys = [f"k{i}" for i in range(5)]
    await asyncio.gather(*(store.update_job("shared", add_label(k)) for k in keys))
    found = await store.get_job("shared")
    assert found is not None
    assert found[0].labels == dict.fromkeys(keys, "1")
    assert calls > len(keys), "the updates should have conflicted and retried"


async def test_suspend_resume_via_update_job(store: JobStore) -> None:
    await store.put_job(job("s"))
    spec = await store.update_job("s", lambda s: s.model_copy(update={"suspend": True}))
    assert spec.suspend
    found = await store.get_job("s")
    assert found is not None and found[0].suspend
    with pytest.raises(JobNotFound):
        await store.update_job("nope", lambda s: s)


async def test_apply_create_update_unchanged_prune(store: JobStore) -> None:
    specs = [job("a"), job("b"), job("c")]
    plan = await store.apply(specs, prune=False, dry_run=False)
    assert plan.names("create") == ["a", "b", "c"] and plan.applied and plan.batches == 1

    plan = await store.apply(specs, prune=False, dry_run=False)
    assert plan.names("unchanged") == ["a", "b", "c"] and plan.batches == 0

    specs2 = [job("a"), job("b", schedule="@hourly")]
    plan = await store.apply(specs2, prune=False, dry_run=False)
    assert plan.names("update") == ["b"] and plan.names("delete") == []
    jobs, bad, _ = await store.list_jobs()
    assert [j.name for j in jobs] == ["a", "b", "c"] and bad == []

    plan = await store.apply(specs2, prune=True, dry_run=False)
    assert plan.names("delete") == ["c"] and plan.names("unchanged") == ["a", "b"]
    jobs, _, _ = await store.list_jobs()
    assert [j.name for j in jobs] == ["a", "b"]
    assert jobs[1].schedule == "@hourly"


async def test_dry_run_writes_nothing(store: JobStore, client: EtcdClient) -> None:
    await store.put_job(job("keep"))
    before = await client.revision()
    plan = await store.apply([job("new"), job("keep", shell="x")], prune=True, dry_run=True)
    assert plan.names("create") == ["new"] and plan.names("update") == ["keep"]
    assert plan.dry_run and not plan.applied and plan.batches == 0
    assert await client.revision() == before
    assert await store.get_job("new") is None


async def test_duplicate_names_refused(store: JobStore, client: EtcdClient) -> None:
    with pytest.raises(ValueError, match="more than once"):
        await store.apply([job("d"), job("d")], prune=False, dry_run=False)
    assert await store.get_job("d") is None


async def test_malformed_value_in_etcd_is_reported_and_skipped(
    store: JobStore, client: EtcdClient
) -> None:
    ks = store.ks
    await store.put_job(job("good"))
    await client.put(ks.job("broken"), b"{not json")
    await client.put(ks.job("renamed"), job("other").to_json())
    jobs, bad, _ = await store.list_jobs()
    assert [j.name for j in jobs] == ["good"]
    assert sorted(n for n, _ in bad) == ["broken", "renamed"]
    assert "JSON" in dict(bad)["broken"] and "does not match" in dict(bad)["renamed"]

    plan = await store.plan([job("good"), job("broken")], prune=True)
    assert plan.names("update") == ["broken"]  # a valid spec repairs it
    assert plan.names("delete") == ["renamed"]
    await store.apply([job("good"), job("broken")], prune=True, dry_run=False)
    jobs, bad, _ = await store.list_jobs()
    assert [j.name for j in jobs] == ["broken", "good"] and bad == []


async def test_apply_conflict_names_the_job_and_writes_nothing(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_job(job("x"))
    stale = await store.plan([job("x", shell="mine"), job("y")], prune=False)
    await store.put_job(job("x", shell="someone else"))  # moves x after the plan

    async def stale_plan(specs: list[JobSpec], *, prune: bool) -> Plan:
        return stale

    monkeypatch.setattr(store, "plan", stale_plan)
    with pytest.raises(ConflictError, match="x") as info:
        await store.apply([], prune=False, dry_run=False)
    assert info.value.jobs == ["x"]
    found = await store.get_job("x")
    assert found is not None and found[0].shell == "someone else"
    assert await store.get_job("y") is None  # same batch: not written


async def test_large_apply_is_written_in_batches(store: JobStore) -> None:
    n = BATCH * 2 + BATCH // 2
    specs = [job(f"j{i:03d}") for i in range(n)]
    plan = await store.apply(specs, prune=False, dry_run=False)
    assert plan.batches == 3 and len(plan.names("create")) == n
    jobs, bad, _ = await store.list_jobs()
    assert len(jobs) == n and not bad
    plan = await store.apply(specs[:10], prune=True, dry_run=False)
    assert len(plan.names("delete")) == n - 10 and plan.batches == 3
    jobs, _, _ = await store.list_jobs()
    assert len(jobs) == 10


async def test_apply_of_big_specs_is_cut_by_bytes_too(store: JobStore) -> None:
    """40 specs of ~60 KB (each within the 64 KiB limit) are 2.4 MB: one transaction
    would exceed etcd's 1.5 MiB request limit and fail as 'etcd unavailable'."""
    specs = [
        job(f"big{i:02d}", env={f"V{k}": f"{i % 10}" * 20_000 for k in range(3)}) for i in range(40)
    ]
    assert all(60_000 < len(s.to_json()) <= 64 * 1024 for s in specs)
    plan = await store.apply(specs, prune=False, dry_run=False)
    per_batch = BATCH_BYTES // len(specs[0].to_json())
    assert plan.batches == -(-40 // per_batch) and len(plan.names("create")) == 40
    jobs, bad, _ = await store.list_jobs()
    assert jobs == sorted(specs, key=lambda s: s.name) and not bad


async def test_runs_newest_first_and_malformed_skipped(store: JobStore, client: EtcdClient) -> None:
    ks = store.ks
    for i in range(5):
        rec = RunRecord(
            job="r",
            run_id=f"2026010{i + 1}T000000Z-aaaaa{i}",
            tick=f"2026-01-0{i + 1}T00:00:00Z",  # type: ignore[arg-type]
            status=RunStatus.SUCCEEDED,
        )
        await client.put(ks.run("r", rec.run_id), rec.to_json())
    await client.put(ks.run("r", "20270101T000000Z-bad"), b"garbage")
    runs = await store.list_runs("r", limit=3)
    assert [r.run_id[:8] for r in runs] == ["20260105", "20260104", "20260103"]
    got = await store.get_run("r", runs[0].run_id)
    assert got == runs[0]
    assert await store.get_run("r", "nope") is None


async def test_run_and_kill_requests(store: JobStore, client: EtcdClient) -> None:
    ks = store.ks
    await store.put_job(job("t"))
    request_id = await store.request_run("t")
    kv, _ = await client.get(ks.trigger("t", request_id))
    assert kv is not None and kv.lease != 0
    assert json.loads(kv.value)["request_id"] == request_id
    assert 0 < await client.lease_ttl(kv.lease) <= 60

    await store.request_kill("t")
    kv, _ = await client.get(ks.killer("t"))
    assert kv is not None and "requested_at" in json.loads(kv.value)
    assert 0 < await client.lease_ttl(kv.lease) <= 30

    with pytest.raises(JobNotFound):
        await store.request_run("unknown")
    with pytest.raises(JobNotFound):
        await store.request_kill("unknown")
    assert await client.count_prefix(ks.triggers + "unknown/") == 0


async def test_requests_and_audit_follow_the_injected_clock(
    client: EtcdClient, prefix: str
) -> None:
    """Every time the store writes (requests, audit entries) comes from its clock."""
    clock = OffsetClock(offset=-10 * 365 * 86400.0)  # ten years behind
    store = JobStore(client, Keyspace(prefix), clock=clock)
    await store.put_job(job("t"))
    request_id = await store.request_run("t")
    then = clock.now()
    assert request_id.startswith(str(then.year)), request_id
    await store.request_kill("t")
    kv, _ = await client.get(store.ks.killer("t"))
    assert kv is not None
    req = StopRequest.parse(kv.value)
    assert req is not None and req.requested_at is not None
    assert abs((req.requested_at - then).total_seconds()) < 60
    entries, _ = await list_entries(client, store.ks)
    assert entries and all(abs((e.at - then).total_seconds()) < 60 for e in entries)


async def test_list_workers_skew(store: JobStore, client: EtcdClient) -> None:
    ks = store.ks
    base = {"host": "h", "pid": 1, "labels": {}, "capacity": 4, "running": 0, "version": "x"}
    lease, _ = await client.grant(30)
    for wid, extra in [("w1", {"clock": 100.0}), ("w2", {"clock": 101.0}),
                       ("w3", {"clock": 103.0}), ("w4", {"skew": 0.25})]:  # fmt: skip
        value = json.dumps({**base, "id": wid, **extra}).encode()
        await client.put(ks.worker(wid), value, lease=lease)
    await client.put(ks.worker("w5"), b"[broken", lease=lease)
    await client.put(ks.worker("forged"), json.dumps({**base, "id": "forged"}).encode())
    workers = await store.list_workers()
    await client.revoke(lease)
    assert [w["id"] for w in workers] == ["w1", "w2", "w3", "w4"]  # not the unleased one
    assert [w["skew"] for w in workers] == [-1.0, 0.0, 2.0, 0.25]

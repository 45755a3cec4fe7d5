"""Audit trail and definition history through the master API (in-process) on a real etcd."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from scheduler.audit import AuditEntry, entry_op
from scheduler.config import EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.api import create_app
from scheduler.master.housekeeping import Housekeeper
from scheduler.master.tokens import TokenEntry, Tokens
from scheduler.model import JobSpec
from scheduler.store import JobStore
from scheduler.versions import latest_numbers

TOKEN = "audit-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADDRESS = "127.0.0.1:123"
"""The client address httpx's ASGI transport reports."""


def spec(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "schedule": "*/5 * * * *", "shell": f"echo {name}", **kw}


@pytest.fixture
async def ec(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


@pytest.fixture
def ks(prefix: str) -> Keyspace:
    return Keyspace(prefix)


@pytest.fixture
async def api(ec: EtcdClient, ks: Keyspace) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(JobStore(ec, ks, keep_versions=3), token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://m", headers=AUTH) as c:
        yield c


async def _entries(ec: EtcdClient, ks: Keyspace) -> list[AuditEntry]:
    kvs, _ = await ec.get_prefix(ks.audit)
    return [AuditEntry.model_validate_json(kv.value) for kv in kvs]


async def _stored(ec: EtcdClient, ks: Keyspace, name: str) -> dict[str, Any] | None:
    kv, _ = await ec.get(ks.job(name))
    return None if kv is None else dict(json.loads(kv.value))


async def test_each_operation_makes_exactly_one_entry(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    calls: list[tuple[str, str, Any, str, list[str]]] = [
        ("PUT", "/v1/jobs/a", spec("a"), "put", ["a"]),
        ("POST", "/v1/apply", {"jobs": [spec("a", retries=2), spec("b")]}, "apply", ["a", "b"]),
        ("POST", "/v1/jobs/a/suspend", None, "suspend", ["a"]),
        ("POST", "/v1/jobs/a/resume", None, "resume", ["a"]),
        ("POST", "/v1/jobs/a/run", None, "run", ["a"]),
        ("POST", "/v1/jobs/a/kill", None, "kill", ["a"]),
        ("DELETE", "/v1/jobs/b", None, "delete", ["b"]),
    ]
    for method, url, body, operation, jobs in calls:
        before = len(await _entries(ec, ks))
        r = await api.request(method, url, json=body)
        assert r.status_code < 300, (url, r.text)
        entries = await _entries(ec, ks)
        assert len(entries) == before + 1, (operation, entries)
        new = entries[-1]
        assert (new.operation, new.who, new.address, new.jobs) == (
            operation,
            "token",
            ADDRESS,
            jobs,
        )
    by_op = {e.operation: e for e in await _entries(ec, ks)}
    apply = {d.job: d for d in by_op["apply"].changes}
    assert apply["a"].change == "update" and apply["a"].fields == ["retries"]
    assert apply["a"].before != apply["a"].after and apply["b"].change == "create"
    assert by_op["suspend"].changes[0].fields == ["suspend"]
    assert (
        by_op["delete"].changes[0].change == "delete" and by_op["delete"].changes[0].after is None
    )
    assert by_op["run"].detail.startswith("request ") and by_op["run"].changes == []
    listed = (await api.get("/v1/audit")).json()["entries"]
    assert [e["operation"] for e in listed] == [c[3] for c in reversed(calls)]


async def test_a_refused_change_leaves_no_entry(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    assert (await api.put("/v1/jobs/a", json=spec("a"))).status_code == 200
    n = len(await _entries(ec, ks))
    r = await api.put("/v1/jobs/a", json=spec("a", retries=1), headers={"If-Match": "1"})
    assert r.status_code == 409
    assert (await api.post("/v1/jobs/nope/run")).status_code == 404
    assert (await api.post("/v1/jobs/a/resume")).status_code == 200  # not suspended: no change
    assert len(await _entries(ec, ks)) == n


async def test_job_since_and_limit_filter_and_page(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    old = AuditEntry(
        at=datetime.now(UTC) - timedelta(hours=3), who="old", operation="put", jobs=["a"]
    )
    await ec.txn([], [entry_op(ks, old)])
    for i, name in enumerate(("a", "b", "a", "b")):
        r = await api.post("/v1/apply", json={"jobs": [spec(name, description=str(i))]})
        assert r.status_code == 200
    a = (await api.get("/v1/audit", params={"job": "a"})).json()["entries"]
    assert [e["who"] for e in a] == ["token", "token", "old"] and all("a" in e["jobs"] for e in a)
    recent = (await api.get("/v1/audit", params={"job": "a", "since": "1h"})).json()["entries"]
    assert len(recent) == 2 and all(e["who"] == "token" for e in recent)
    at = (datetime.now(UTC) - timedelta(hours=4)).isoformat()
    assert len((await api.get("/v1/audit", params={"since": at})).json()["entries"]) == 5
    page = (await api.get("/v1/audit", params={"limit": 2})).json()
    assert len(page["entries"]) == 2 and page["next"] == page["entries"][-1]["id"]
    rest = (await api.get("/v1/audit", params={"before": page["next"]})).json()
    assert len(rest["entries"]) == 3 and rest["next"] is None
    ids = [e["id"] for e in page["entries"] + rest["entries"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5


async def test_housekeeping_applies_retention(ec: EtcdClient, ks: Keyspace) -> None:
    now = datetime.now(UTC)
    ages = [timedelta(days=100), timedelta(days=91), *(timedelta(minutes=m) for m in range(5))]
    for age in ages:
        e = AuditEntry(at=now - age, who=f"{age}", operation="kill", jobs=["a"])
        await ec.txn([], [entry_op(ks, e)])
    cfg = MasterConfig(audit_keep_for=90 * 86400, audit_max_entries=3)
    await Housekeeper(ec, ks, cfg, identity="m").tend()
    left = await _entries(ec, ks)
    assert [e.who for e in left] == [f"{timedelta(minutes=m)}" for m in (2, 1, 0)]


async def test_versions_history_and_rollback(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    assert (await api.put("/v1/jobs/a", json=spec("a"))).status_code == 200
    r = await api.put("/v1/jobs/a", json=spec("a", shell="echo two"))
    assert r.status_code == 200
    mod = r.json()["mod_revision"]
    listed = (await api.get("/v1/jobs/a/versions")).json()["versions"]
    assert [(v["version"], v["change"], v["who"]) for v in listed] == [
        (2, "update", "token"),
        (1, "create", "token"),
    ]
    v1 = (await api.get("/v1/jobs/a/versions/1")).json()
    assert v1["spec"]["shell"] == "echo a" and v1["address"] == ADDRESS
    # a concurrent change: the If-Match seen is stale -> 409, nothing written
    stale = await api.post("/v1/jobs/a/rollback", headers={"If-Match": str(mod - 1)})
    assert stale.status_code == 409 and "changed since it was read" in stale.json()["detail"]
    assert (await _stored(ec, ks, "a") or {})["shell"] == "echo two"
    undo = await api.post("/v1/jobs/a/rollback", headers={"If-Match": str(mod)})
    assert undo.status_code == 200, undo.text
    assert undo.json()["restored"] == 1 and undo.json()["changed"] is True
    assert (await _stored(ec, ks, "a") or {})["shell"] == "echo a"
    v3 = (await api.get("/v1/jobs/a/versions/3")).json()
    assert v3["operation"] == "rollback" and v3["restored"] == 1
    rollbacks = [e for e in await _entries(ec, ks) if e.operation == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].changes[0].version == 3


async def test_delete_keeps_history_and_undo_restores(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    assert (await api.put("/v1/jobs/a", json=spec("a", retries=3))).status_code == 200
    assert (await api.delete("/v1/jobs/a")).status_code == 200
    listed = (await api.get("/v1/jobs/a/versions")).json()["versions"]
    assert [v["change"] for v in listed] == ["delete", "create"]
    r = await api.post("/v1/jobs/a/rollback", json={"to": 2})
    assert r.status_code == 409 and "deletion" in r.json()["detail"]
    r = await api.post("/v1/jobs/a/rollback", headers={"If-Match": "0"})
    assert r.status_code == 200 and r.json()["restored"] == 1
    assert (await _stored(ec, ks, "a") or {})["retries"] == 3


async def test_only_the_last_versions_are_kept(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    for i in range(5):
        assert (await api.put("/v1/jobs/a", json=spec("a", retries=i))).status_code == 200
    kvs, _ = await ec.get_prefix(ks.job_history("a"))
    assert [Keyspace.tail(kv.key, ks.job_history("a")) for kv in kvs] == [
        f"{v:010d}" for v in (3, 4, 5)
    ]
    r = await api.post("/v1/jobs/a/rollback", json={"to": 1})
    assert r.status_code == 404 and "not kept" in r.json()["detail"]


async def test_store_without_changes_makes_no_version(ec: EtcdClient, ks: Keyspace) -> None:
    store = JobStore(ec, ks)
    job = JobSpec.model_validate(spec("a"))
    await store.put_job(job)
    await store.put_job(job)
    kvs, _ = await ec.get_prefix(ks.job_history("a"))
    assert len(kvs) == 1 and len(await _entries(ec, ks)) == 2


@pytest.mark.parametrize(
    ("method", "url", "body", "params", "status"),
    [
        ("GET", "/v1/audit", None, {"limit": "0"}, 422),
        ("GET", "/v1/audit", None, {"limit": "99999999999999999999"}, 422),
        ("GET", "/v1/audit", None, {"since": "yesterday"}, 422),
        ("GET", "/v1/audit", None, {"since": "9" * 60}, 200),  # capped at 100 years
        ("GET", "/v1/audit", None, {"since": "x" * 5000}, 422),
        ("GET", "/v1/audit", None, {"job": "Not_A_Job"}, 422),
        ("GET", "/v1/audit", None, {"before": "../../jobs"}, 422),
        ("GET", "/v1/jobs/a/versions/0", None, None, 422),
        ("GET", "/v1/jobs/a/versions/99999999999999999999999", None, None, 422),
        ("GET", "/v1/jobs/a/versions/x", None, None, 422),
        ("GET", "/v1/jobs/a/versions/7", None, None, 404),
        ("GET", "/v1/jobs/nope/versions", None, None, 404),
        ("GET", "/v1/jobs/" + "a" * 5000 + "/versions", None, None, 422),
        ("POST", "/v1/jobs/a/rollback", {"to": "x"}, None, 422),
        ("POST", "/v1/jobs/a/rollback", {"to": -1}, None, 422),
        ("POST", "/v1/jobs/a/rollback", {"to": 1, "extra": 1}, None, 422),
        ("POST", "/v1/jobs/a/rollback", [1, 2], None, 422),
        ("POST", "/v1/jobs/a/rollback", {"to": 10**30}, None, 422),
        ("POST", "/v1/jobs/a/rollback", {"to": 9}, None, 404),
        ("POST", "/v1/jobs/nope/rollback", None, None, 404),
        ("POST", "/v1/jobs/Bad_Name/rollback", None, None, 422),
    ],
)
async def test_bad_input_is_4xx(
    api: httpx.AsyncClient,
    method: str,
    url: str,
    body: Any,
    params: dict[str, str] | None,
    status: int,
) -> None:
    assert (await api.put("/v1/jobs/a", json=spec("a"))).status_code == 200
    r = await api.request(method, url, json=body, params=params)
    assert r.status_code == status, r.text


async def test_latest_numbers_in_one_read_and_with_names_in_between(
    ec: EtcdClient, ks: Keyspace
) -> None:
    store = JobStore(ec, ks, keep_versions=2)
    for name, n in (("a", 3), ("a-b", 1), ("a0", 2), ("b", 1), ("c", 5)):
        for i in range(n):
            await store.put_job(JobSpec.model_validate(spec(name, retries=i)))
    # "a-b/" sorts before "a/": the range must still cover both
    found = await latest_numbers(ec, ks, ["a", "a-b", "b"], keep=2)
    assert found == {"a": 3, "a-b": 1, "b": 1}
    # 7 keys in the range, over the budget of 2 per name: per-name reads, same answer
    found = await latest_numbers(ec, ks, ["a", "c", "d"], keep=1)
    assert found == {"a": 3, "c": 5, "d": 0}


async def test_named_tokens_are_recorded_and_scopes_hold(ec: EtcdClient, ks: Keyspace) -> None:
    ops_token, reader_token = "o" * 24, "r" * 24
    tokens = Tokens(
        entries=[
            TokenEntry("ci-ops", "operate", hashlib.sha256(ops_token.encode()).digest()),
            TokenEntry("dashboard", "read", hashlib.sha256(reader_token.encode()).digest()),
        ]
    )
    store = JobStore(ec, ks)
    await store.put_job(JobSpec.model_validate(spec("a")))
    app = create_app(store, tokens=tokens)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as c:
        ops = {"Authorization": f"Bearer {ops_token}"}
        reader = {"Authorization": f"Bearer {reader_token}"}
        assert (await c.post("/v1/jobs/a/suspend", headers=ops)).status_code == 200
        assert (await c.post("/v1/jobs/a/rollback", headers=ops)).status_code == 403
        assert (await c.get("/v1/jobs/a/versions", headers=reader)).status_code == 200
        r = await c.get("/v1/audit", params={"limit": 1}, headers=reader)
        assert r.status_code == 200
        (newest,) = r.json()["entries"]
        assert (newest["who"], newest["operation"]) == ("ci-ops", "suspend")

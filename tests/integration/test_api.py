"""The master API in-process (httpx ASGI transport) against a real etcd."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from scheduler.config import DEFAULT_MAX_BODY_BYTES, Config, EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.api import MAX_PROBLEMS, create_app
from scheduler.master.server import MasterConfigError, run_master
from scheduler.store import JobStore

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


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
    app = create_app(JobStore(ec, ks), token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://master") as c:
        yield c


async def _keys(ec: EtcdClient, ks: Keyspace) -> dict[str, bytes]:
    kvs, _ = await ec.get_prefix(ks.prefix + "/")
    return {kv.key: kv.value for kv in kvs}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_auth_required_and_nothing_changes(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace, headers: dict[str, str]
) -> None:
    await ec.put(ks.job("a"), json.dumps(spec("a")).encode())
    before = await _keys(ec, ks)
    calls = [
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs/a", None),
        ("PUT", "/v1/jobs/b", spec("b")),
        ("DELETE", "/v1/jobs/a", None),
        ("POST", "/v1/apply", {"jobs": [spec("c")], "prune": True}),
        ("POST", "/v1/jobs/a/suspend", None),
        ("POST", "/v1/jobs/a/run", None),
        ("POST", "/v1/jobs/a/kill", None),
        ("GET", "/v1/jobs/a/runs", None),
        ("GET", "/v1/workers", None),
    ]
    for method, url, body in calls:
        r = await api.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (method, url, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert await _keys(ec, ks) == before


async def test_health(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["etcd_revision"] > 0


async def test_crud_and_if_match(api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace) -> None:
    r = await api.put("/v1/jobs/web", json=spec("web"), headers={**AUTH, "If-Match": "0"})
    assert r.status_code == 200, r.text
    rev = r.json()["mod_revision"]
    assert r.headers["etag"] == f'"{rev}"'

    r = await api.put("/v1/jobs/web", json=spec("web"), headers={**AUTH, "If-Match": "0"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]

    r = await api.get("/v1/jobs/web", headers=AUTH)
    assert r.status_code == 200 and r.json()["spec"]["shell"] == "echo web"
    assert r.json()["mod_revision"] == rev

    r = await api.put(
        "/v1/jobs/web", json=spec("web", shell="new"), headers={**AUTH, "If-Match": str(rev - 1)}
    )
    assert r.status_code == 409
    r = await api.put(
        "/v1/jobs/web",
        json={"schedule": "@hourly", "shell": "new"},
        headers={**AUTH, "If-Match": f'"{rev}"'},
    )
    assert r.status_code == 200, r.text
    rev2 = r.json()["mod_revision"]

    r = await api.get("/v1/jobs", headers=AUTH)
    assert [j["name"] for j in r.json()["jobs"]] == ["web"]
    assert r.json()["jobs"][0]["schedule"] == "@hourly"

    r = await api.delete("/v1/jobs/web", headers={**AUTH, "If-Match": str(rev)})
    assert r.status_code == 409
    r = await api.delete("/v1/jobs/web", headers={**AUTH, "If-Match": str(rev2)})
    assert r.status_code == 200 and r.json() == {"deleted": "web"}
    assert (await api.get("/v1/jobs/web", headers=AUTH)).status_code == 404
    assert (await api.delete("/v1/jobs/web", headers=AUTH)).status_code == 404
    assert (await api.post("/v1/jobs/web/suspend", headers=AUTH)).status_code == 404


async def test_put_validation_names_job_and_field(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    r = await api.put("/v1/jobs/bad", json=spec("bad", schedule="61 * * * *"), headers=AUTH)
    assert r.status_code == 422
    problems = r.json()["problems"]
    assert problems[0]["job"] == "bad" and problems[0]["field"] == "schedule"

    r = await api.put("/v1/jobs/bad", json=spec("other"), headers=AUTH)
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "name"

    r = await api.put("/v1/jobs/bad", json={**spec("bad"), "colour": "red"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "colour"

    r = await api.put("/v1/jobs/bad", json=spec("bad"), headers={**AUTH, "If-Match": "x"})
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "If-Match"
    assert await _keys(ec, ks) == {}


@pytest.mark.parametrize(
    "value",
    [b"\xb2", b"\xb9\xb3", "١٢".encode(), b"-1", b"+1", b"1_000", b" 1 2 ", b"*", b"",
     b"99999999999999999999", str(2**63).encode(), b"0x10", b'W/"\xb2"'],
)  # fmt: skip
async def test_if_match_that_is_not_a_revision_is_400(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace, value: bytes
) -> None:
    for method, body in (("PUT", spec("w")), ("DELETE", None)):
        r = await api.request(
            method,
            "/v1/jobs/w",
            json=body,
            headers={**AUTH, "If-Match": value},  # type: ignore[dict-item]
        )
        assert r.status_code == 400, (method, value, r.text)
        (problem,) = r.json()["problems"]
        assert problem["field"] == "If-Match" and "expected a mod revision" in problem["message"]
    assert await _keys(ec, ks) == {}


async def test_if_match_at_the_int64_limit_is_a_plain_conflict(api: httpx.AsyncClient) -> None:
    headers = {**AUTH, "If-Match": str(2**63 - 1)}
    r = await api.put("/v1/jobs/w", json=spec("w"), headers=headers)
    assert r.status_code == 409, r.text


async def test_a_huge_name_gets_a_short_answer(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    name = "n" * 100_000
    in_url = "n" * 30_000  # httpx refuses URLs over 64 KiB (and the master heads over 16 KiB)
    answers = [
        await api.put(
            f"/v1/jobs/{in_url}", json={"schedule": "@hourly", "shell": "x"}, headers=AUTH
        ),
        await api.post("/v1/apply", json={"jobs": [spec(name)]}, headers=AUTH),
        await api.post("/v1/apply", json={"jobs": [spec(name)] * 3}, headers=AUTH),
        await api.get(f"/v1/jobs/{in_url}", headers=AUTH),
        await api.get(f"/v1/jobs/{in_url[:100]}/runs/{in_url}", headers=AUTH),
        await api.get(f"/v1/jobs/{in_url}/follow", headers=AUTH),
        await api.put("/v1/jobs/a", json={**spec("a"), "schedule": name}, headers=AUTH),
        await api.put("/v1/jobs/a", json={**spec("a"), "timezone": name}, headers=AUTH),
        await api.put("/v1/jobs/a", json={**spec("a"), "timeout": name}, headers=AUTH),
        await api.put("/v1/jobs/a", json={**spec("a"), name: 1}, headers=AUTH),
        await api.put("/v1/jobs/a", json={**spec("a"), "env": {"9" + name: "v"}}, headers=AUTH),
        await api.put("/v1/jobs/a", json={**spec("a"), "name": name}, headers=AUTH),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text[:200]
        assert len(r.content) < 2000, (r.status_code, r.text[:300])
        assert "n" * 200 not in r.text, "the input is not echoed at length"
    assert await _keys(ec, ks) == {}


async def test_many_invalid_jobs_list_a_bounded_number_of_problems(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    jobs = [spec(f"j{i}", schedule="61 * * * *") for i in range(1000)]
    r = await api.post("/v1/apply", json={"jobs": jobs}, headers=AUTH)
    assert r.status_code == 422
    problems = r.json()["problems"]
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1]["message"] == "and 900 more problems"
    assert "(and 997 more)" in r.json()["detail"] and len(r.content) < 50_000
    assert await _keys(ec, ks) == {}


@pytest.mark.parametrize(
    "body",
    [b'{"schedule": "@hourly", "shell": "echo \\ud800"}',
     b'{"schedule": "@hourly", "shell": "x", "env": {"\\udfff": "v"}}',
     b'{"schedule": "@hourly", "shell": "x", "labels": {"k": "\xed\xa0\x80"}}',
     b'{"schedule": "@hourly", "shell": "x", "timeout": NaN}',
     b'{"schedule": "@hourly", "shell": "x", "timeout": 1e999}',
     b'{"schedule": "@hourly", "shell": "x", "timeout": "99999999999999999999999999999'
     b'99999999999999999999999999999999999999999999999999999999999999999999999999999'
     b'99999999999999999999999999999999999999999999999999999999999999999999999999999'
     b'99999999999999999999999999999999999999999999999999999999999999999999999999999'
     b'999999999999999999999s"}',
     b'{"schedule": "@hourly", "shell": "x", "output_limit": "' + b"9" * 400 + b'MiB"}'],
)  # fmt: skip
async def test_strings_and_numbers_python_cannot_store_are_4xx(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace, body: bytes
) -> None:
    r = await api.put("/v1/jobs/s", content=body, headers=AUTH)
    assert r.status_code in (400, 422), r.text
    assert r.json()["detail"]
    r = await api.post(
        "/v1/apply", content=b'{"jobs": [' + body[:-1] + b', "name": "s"}]}', headers=AUTH
    )
    assert r.status_code in (400, 422), r.text
    assert await _keys(ec, ks) == {}


async def test_a_body_over_max_body_bytes_is_413(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    big = {"jobs": [spec("a", description="x" * (DEFAULT_MAX_BODY_BYTES + 1))]}
    r = await api.post("/v1/apply", json=big, headers=AUTH)
    assert r.status_code == 413 and "master.max_body_bytes" in r.json()["detail"]
    # under the master's body limit, over the spec limits (and etcd's 1.5 MiB a
    # request): a 422 naming the limit, not a 503
    r = await api.put("/v1/jobs/a", json=spec("a", description="x" * (2 << 20)), headers=AUTH)
    assert r.status_code == 422 and "at most" in r.json()["detail"], r.text
    assert await _keys(ec, ks) == {}


async def test_apply_with_one_invalid_job_writes_nothing(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    body = {"jobs": [spec("ok1"), spec("bad", timezone="Mars/Olympus"), spec("ok2")]}
    r = await api.post("/v1/apply", json=body, headers=AUTH)
    assert r.status_code == 422
    (problem,) = r.json()["problems"]
    assert problem["job"] == "bad" and problem["field"] == "timezone"
    assert "Mars/Olympus" in problem["message"]

    r = await api.post("/v1/apply", json={"jobs": [spec("d"), spec("d")]}, headers=AUTH)
    assert r.status_code == 422 and "more than once" in r.text
    assert await _keys(ec, ks) == {}


async def test_apply_plan_dry_run_and_prune(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    body: dict[str, Any] = {"jobs": [spec("a"), spec("b")], "dry_run": True}
    r = await api.post("/v1/apply", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["create"] == ["a", "b"] and not r.json()["applied"]
    assert await _keys(ec, ks) == {}

    body["dry_run"] = False
    r = await api.post("/v1/apply", json=body, headers=AUTH)
    assert r.json()["create"] == ["a", "b"] and r.json()["applied"]

    r = await api.post(
        "/v1/apply", json={"jobs": [spec("a", shell="x")], "prune": True}, headers=AUTH
    )
    assert r.json()["update"] == ["a"] and r.json()["delete"] == ["b"]
    r = await api.get("/v1/jobs", headers=AUTH)
    assert [j["name"] for j in r.json()["jobs"]] == ["a"]


async def test_suspend_resume(api: httpx.AsyncClient) -> None:
    await api.put("/v1/jobs/s", json=spec("s"), headers=AUTH)
    r = await api.post("/v1/jobs/s/suspend", headers=AUTH)
    assert r.status_code == 200 and r.json()["suspend"] is True
    assert (await api.get("/v1/jobs/s", headers=AUTH)).json()["spec"]["suspend"] is True
    r = await api.post("/v1/jobs/s/resume", headers=AUTH)
    assert r.status_code == 200 and r.json()["suspend"] is False
    assert (await api.get("/v1/jobs/s", headers=AUTH)).json()["spec"]["suspend"] is False


async def test_run_and_kill_write_request_keys(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    await api.put("/v1/jobs/r", json=spec("r"), headers=AUTH)
    r = await api.post("/v1/jobs/r/run", headers=AUTH)
    assert r.status_code == 202
    request_id = r.json()["request_id"]
    kv, _ = await ec.get(ks.trigger("r", request_id))
    assert kv is not None and kv.lease

    r = await api.post("/v1/jobs/r/kill", headers=AUTH)
    assert r.status_code == 202
    kv, _ = await ec.get(ks.killer("r"))
    assert kv is not None and kv.lease

    assert (await api.post("/v1/jobs/nope/run", headers=AUTH)).status_code == 404
    assert (await api.post("/v1/jobs/nope/kill", headers=AUTH)).status_code == 404


async def test_runs_workers_and_bad_values(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    await api.put("/v1/jobs/h", json=spec("h"), headers=AUTH)
    rec = {"job": "h", "run_id": "20260101T000000Z-abc123", "tick": "2026-01-01T00:00:00Z",
           "status": "succeeded", "exit_code": 0}  # fmt: skip
    await ec.put(ks.run("h", rec["run_id"]), json.dumps(rec).encode())
    r = await api.get("/v1/jobs/h/runs", params={"limit": 5}, headers=AUTH)
    assert r.status_code == 200 and [x["run_id"] for x in r.json()["runs"]] == [rec["run_id"]]
    r = await api.get(f"/v1/jobs/h/runs/{rec['run_id']}", headers=AUTH)
    assert r.status_code == 200 and r.json()["exit_code"] == 0
    assert (await api.get("/v1/jobs/h/runs/nope", headers=AUTH)).status_code == 404
    assert (await api.get("/v1/jobs/nope/runs", headers=AUTH)).status_code == 404
    assert (await api.get("/v1/jobs/h/runs?limit=0", headers=AUTH)).status_code == 422

    worker = {"id": "w1", "host": "h1", "pid": 5, "labels": {"zone": "a"}, "capacity": 3,
              "running": 1, "version": "0.1", "clock": 1.0, "skew": 0.01}  # fmt: skip
    lease, _ = await ec.grant(30)
    await ec.put(ks.worker("w1"), json.dumps(worker).encode(), lease=lease)
    await ec.put(ks.worker("forged"), json.dumps(worker | {"id": "forged"}).encode())
    r = await api.get("/v1/workers", headers=AUTH)
    assert r.status_code == 200 and r.json()["workers"][0]["labels"] == {"zone": "a"}
    # a registration with no lease has no live worker behind it: not listed
    assert [w["id"] for w in r.json()["workers"]] == ["w1"]
    await ec.revoke(lease)

    await ec.put(ks.job("corrupt"), b"\xff not json")
    r = await api.get("/v1/jobs", headers=AUTH)
    assert r.status_code == 200 and r.json()["invalid"][0]["name"] == "corrupt"
    r = await api.get("/v1/jobs/corrupt", headers=AUTH)
    assert r.status_code == 500 and "corrupt" in r.json()["detail"]


async def test_etcd_unreachable_is_503(etcd_endpoints: list[str], ks: Keyspace) -> None:
    client = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints, request_timeout=0.5))
    app = create_app(JobStore(client, ks), token=TOKEN)
    await client.close()  # every later call fails like an unreachable cluster
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://master"
    ) as api:
        r = await api.get("/v1/health")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        r = await api.get("/v1/jobs", headers=AUTH)
        assert r.status_code == 503 and "etcd" in r.json()["detail"]


async def test_openapi_lists_routes(api: httpx.AsyncClient) -> None:
    assert (await api.get("/openapi.json")).status_code == 401  # master.public_docs: false
    r = await api.get("/openapi.json", headers=AUTH)
    paths = r.json()["paths"]
    assert "/v1/jobs/{name}" in paths and "/v1/apply" in paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_master_serves_refuses_and_stops(etcd_endpoints: list[str], prefix: str) -> None:
    port = _free_port()
    cfg = Config(
        etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix),
        master=MasterConfig(listen=f"127.0.0.1:{port}", token=TOKEN),
    )
    with pytest.raises(MasterConfigError, match="token"):
        await run_master(
            cfg.model_copy(update={"master": MasterConfig(listen=f"127.0.0.1:{port}")})
        )

    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_master(cfg, ready=ready, stop=stop))
    async with asyncio.timeout(20):
        await ready.wait()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/v1/health")).status_code == 200
        assert (await http.get("/v1/jobs")).status_code == 401
        assert (await http.get("/v1/jobs", headers=AUTH)).status_code == 200
    with pytest.raises(MasterConfigError, match="cannot listen"):
        await run_master(cfg)  # the port is taken
    stop.set()
    async with asyncio.timeout(20):
        await task

    task = asyncio.create_task(run_master(cfg, ready=(ready := asyncio.Event())))
    async with asyncio.timeout(20):
        await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(20):
            await task


# limits (issue 12): 422 naming the field and the limit; nothing written ----------------


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"description": "d" * 5000}, "description", "description is 5000 characters; at most 4096"),
        ({"output_limit": "100GiB"}, "output_limit", "output_limit is 100 GiB; at most 16 MiB"),
        ({"timeout": "9" * 400 + "s"}, "timeout", "is too large"),
        ({"retry_backoff": 1e300}, "retry_backoff", "at most 365d (one year)"),
        ({"shell": None, "command": ["/bin/echo", "a\0b"]}, "command.1", "contains a NUL byte"),
        ({"env": {"A": "\0"}}, "env.A", "env value contains a NUL byte"),
        ({"workdir": "/tmp\0"}, "workdir", "workdir contains a NUL byte"),
        ({"env": {f"V{i}": "v" * 30_000 for i in range(7)}}, None,
         "the job spec is 210"),  # 210 KB: a 422, not etcd's 'request too large' as a 503
    ],
)  # fmt: skip
async def test_limits_are_422_naming_field_and_limit(
    api: httpx.AsyncClient,
    ec: EtcdClient,
    ks: Keyspace,
    extra: dict[str, Any],
    field: str | None,
    message: str,
) -> None:
    r = await api.put("/v1/jobs/big", json=spec("big", **extra), headers=AUTH)
    assert r.status_code == 422, r.text[:500]
    (problem,) = r.json()["problems"]
    assert (problem["job"], problem["field"]) == ("big", field)
    assert message in problem["message"]
    assert len(r.text) < 2000  # the input is not echoed back
    r = await api.post("/v1/apply", json={"jobs": [spec("ok"), spec("big", **extra)]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == field
    assert await _keys(ec, ks) == {}


async def test_stored_jobs_over_the_new_limits_still_list_read_and_suspend(
    api: httpx.AsyncClient, ec: EtcdClient, ks: Keyspace
) -> None:
    """Limits apply on write; a job written before them is not made unreadable."""
    old = spec("old", description="d" * 10_000, output_limit=100 * 1024**3,
               timeout=2 * 365 * 86400.0, env={"A": "x\0y", "B": "b" * 70_000})  # fmt: skip
    await ec.put(ks.job("old"), json.dumps(old).encode())
    r = await api.get("/v1/jobs", headers=AUTH)
    assert r.status_code == 200 and not r.json()["invalid"]
    assert [j["name"] for j in r.json()["jobs"]] == ["old"]
    r = await api.get("/v1/jobs/old", headers=AUTH)
    assert r.status_code == 200 and r.json()["spec"]["output_limit"] == 100 * 1024**3
    r = await api.post("/v1/jobs/old/suspend", headers=AUTH)
    assert r.status_code == 200 and r.json()["suspend"] is True
    kv, _ = await ec.get(ks.job("old"))
    assert kv is not None and json.loads(kv.value)["env"] == old["env"]
    # writing it again through the API is held to the limits
    r = await api.put("/v1/jobs/old", json=old, headers=AUTH)
    assert r.status_code == 422
    assert {p["field"] for p in r.json()["problems"]} == {
        "description", "output_limit", "timeout", "env.A", "env.B"
    }  # fmt: skip


async def test_master_applies_its_configured_max_spec_bytes(
    etcd_endpoints: list[str], prefix: str, ec: EtcdClient, ks: Keyspace
) -> None:
    port = _free_port()
    cfg = Config(
        etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix),
        master=MasterConfig(listen=f"127.0.0.1:{port}", token=TOKEN, max_spec_bytes=2048),
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_master(cfg, ready=ready, stop=stop))
    try:
        async with asyncio.timeout(20):
            await ready.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            body = spec("mid", description="m" * 3000)  # fine by default, not here
            r = await http.put("/v1/jobs/mid", json=body, headers=AUTH)
            assert r.status_code == 422
            (problem,) = r.json()["problems"]
            assert problem["field"] is None and problem["message"].endswith("; at most 2048")
            assert await _keys(ec, ks) == {}
            r = await http.put(
                "/v1/jobs/mid", json=spec("mid", description="m" * 1000), headers=AUTH
            )
            assert r.status_code == 200
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task

"""Property: whatever a client sends, the API answers 2xx or 4xx with a JSON message,
never a 500 or a traceback, and an error answer wrote nothing to etcd.

Requests are built from a route, a job name, headers (token, ``If-Match``,
``Content-Type``) and a body, each either plausible or hostile: strings with lone
surrogates, NaN and huge numbers, bytes that are not UTF-8, specs with a field
replaced by anything JSON can hold. The app runs in-process (httpx ASGI
transport, the guard included) against the real etcd. The follow routes are left
out: on an existing job they stream until the client leaves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote as urlquote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.api import create_app
from scheduler.store import JobStore

TOKEN = "fuzz-token"
MAX_BODY = 64 * 1024

_SURROGATES_TOO = st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=())
TEXT = st.text(max_size=30) | st.text(_SURROGATES_TOO, max_size=4) | st.sampled_from(["", " "])
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
PLAUSIBLE = st.sampled_from(["fz", "fz-2"])
NAMES = PLAUSIBLE | PLAUSIBLE | st.sampled_from(["nope", "a" * 64, "UPPER", "a/b", ".."]) | TEXT

FIELDS = {
    "schedule": st.sampled_from(["@hourly", "*/5 * * * *", "@every 10s", "61 * * * *", ""]),
    "timezone": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", "../etc"]),
    "command": st.sampled_from([["true"], [], "true"]),
    "shell": st.sampled_from(["echo hi", " ", "x" * 200]),
    "env": st.dictionaries(st.sampled_from(["A", "1X", "B_2"]), TEXT, max_size=2),
    "timeout": st.sampled_from(["30s", "1h30m", -1, 0, 1e308, "9" * 400, "NaNs"]),
    "concurrency": st.sampled_from(["forbid", "allow", "replace", "sometimes"]),
    "retries": st.integers(-5, 20),
    "output_limit": st.sampled_from(["1MiB", "9" * 400 + "MiB", 0, 2**70]),
    "keep_succeeded": st.integers(-1, 10**30),
    "suspend": st.booleans(),
    "labels": st.dictionaries(TEXT, TEXT, max_size=2),
}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedule": "@hourly", "shell": "echo fuzz"}
    if draw(st.integers(0, 2)) == 0:
        return spec  # valid: the writes and the routes after them are reached too
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        spec[field] = draw(FIELDS[field] | JSONISH)
    if draw(st.booleans()):
        spec.pop("shell")
    if draw(st.integers(0, 9)) == 0:
        spec[draw(TEXT)] = draw(JSONISH)
    return spec


def _dump(value: Any) -> bytes:
    """JSON as Python writes it: NaN, Infinity and "\\ud800" escapes included."""
    return json.dumps(value).encode()


SPEC_BODIES = specs().map(_dump)
APPLY_BODIES = st.builds(
    lambda jobs, names, prune: _dump(
        {
            "jobs": [
                dict(j, name=n) if isinstance(j, dict) else j
                for j, n in zip(jobs, names, strict=False)
            ],
            "prune": prune,
        }
    ),
    st.lists(specs() | JSONISH, max_size=3),
    st.lists(PLAUSIBLE | TEXT, min_size=3),
    st.booleans(),
)
BODIES = st.one_of(
    st.none(),
    SPEC_BODIES,
    APPLY_BODIES,
    JSONISH.map(_dump),
    st.binary(max_size=60),
    st.sampled_from([b"{", b'{"a": NaN}', b'"\xed\xa0\x80"', b"\xff\xfe", b"[" * 5000,
                     b'{"schedule": "@hourly", "shell": "' + b"x" * MAX_BODY + b'"}']),
)  # fmt: skip

WRITES = [("PUT", "/v1/jobs/{}"), ("DELETE", "/v1/jobs/{}"), ("POST", "/v1/apply")]
ROUTES = [
    *WRITES,
    *WRITES,  # twice as likely: the routes that write, and the only ones reading If-Match
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{}"),
    ("POST", "/v1/jobs/{}/suspend"),
    ("POST", "/v1/jobs/{}/resume"),
    ("POST", "/v1/jobs/{}/run"),
    ("POST", "/v1/jobs/{}/kill"),
    ("GET", "/v1/jobs/{}/runs"),
    ("GET", "/v1/jobs/{}/runs/{}"),
    ("GET", "/v1/jobs/{}/runs/{}/output"),
    ("GET", "/v1/workers"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/jobs/{}/versions"),
    ("GET", "/v1/jobs/{}/versions/{}"),
    ("POST", "/v1/jobs/{}/rollback"),
    ("GET", "/v1/health"),
    ("PATCH", "/v1/jobs/{}"),
    ("GET", "/v1/nowhere"),
]
HEADER_BYTES = st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)
IF_MATCH = st.sampled_from([b"0", b"1", b'"3"', b'W/"7"', b"\xb2", b"-1", str(2**63).encode()])
CONTENT_TYPES = st.sampled_from([b"application/json", b"text/plain", b"application/x+json"])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, bytes], bytes | None]:
    method, template = draw(st.sampled_from(ROUTES))
    names = [
        urlquote(draw(NAMES), safe="", errors="surrogatepass") or "x"
        for _ in range(template.count("{}"))
    ]
    path = template.format(*names)
    if path.endswith("/runs") and draw(st.booleans()):
        path += "?limit=" + urlquote(
            draw(TEXT | st.sampled_from(["0", "5", "1001", "²"])), errors="surrogatepass"
        )
    if path.endswith(("/audit", "/versions")) and draw(st.booleans()):
        key = draw(st.sampled_from(["job", "since", "limit", "before"]))
        value = draw(TEXT | st.sampled_from(["1h", "0", "-5", "9" * 40, "2026-01-01T00:00:00"]))
        path += f"?{key}=" + urlquote(value, errors="surrogatepass")
    headers: dict[str, bytes] = {}
    token = draw(st.sampled_from([TOKEN.encode()] * 4 + [b"wrong", None]))
    if token is not None:
        headers["authorization"] = b"Bearer " + token
    if draw(st.integers(0, 2)) == 0:
        headers["if-match"] = draw(IF_MATCH | HEADER_BYTES)
    if draw(st.integers(0, 5)) == 0:
        headers["content-type"] = draw(CONTENT_TYPES | HEADER_BYTES)
    if template == "/v1/jobs/{}" and method == "PUT":
        body = draw(SPEC_BODIES | SPEC_BODIES | BODIES)
    elif template.endswith("/rollback"):
        body = draw(st.sampled_from([b'{"to": 1}', b'{"to": 0}', b"{}", b'{"to": 1e400}']) | BODIES)
    elif template == "/v1/apply":
        body = draw(APPLY_BODIES | APPLY_BODIES | BODIES)
    else:
        body = draw(st.none() | st.none() | BODIES)
    return method, path, headers, body


@pytest.fixture
async def setup(etcd_endpoints: list[str], prefix: str) -> AsyncIterator[tuple[Any, EtcdClient]]:
    client = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    app = create_app(JobStore(client, Keyspace(prefix)), token=TOKEN, max_body_bytes=MAX_BODY)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://master") as api:
        yield api, client
    await client.close()


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
async def test_any_request_gets_a_4xx_or_2xx_and_errors_write_nothing(
    setup: tuple[httpx.AsyncClient, EtcdClient],
    request: tuple[str, str, dict[str, bytes], bytes | None],
) -> None:
    api, client = setup
    method, path, headers, body = request
    before = await client.revision()
    r = await api.request(method, path, headers=headers, content=body)  # type: ignore[arg-type]
    event(f"{method} {r.status_code}")  # --hypothesis-show-statistics: what was reached
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        answer = r.json()
        assert isinstance(answer["detail"], str) and answer["detail"], r.text[:500]
        assert "Traceback" not in r.text
        assert len(r.content) < 20_000, r.text[:500]
        assert await client.revision() == before, (method, path, r.status_code, r.text[:300])

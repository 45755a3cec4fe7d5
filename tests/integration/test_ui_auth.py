"""The dashboard's sign-in, CSRF and scope rules, over httpx against a real etcd.

No browser here: these are the rules a browser cannot be trusted to keep.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.config import DEFAULT_MAX_BODY_BYTES, EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.api import create_app
from scheduler.master.principal import Principal
from scheduler.master.ui import ui_router
from scheduler.master.ui.sessions import COOKIE, Sessions
from scheduler.model import JobSpec
from scheduler.store import JobStore
from tests.support.cluster import put_jobs

TOKEN = "ui-s3cret"
BASE = "http://master"


@pytest.fixture
async def ec(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


@pytest.fixture
async def setup(ec: EtcdClient, prefix: str) -> AsyncIterator[tuple[httpx.AsyncClient, Keyspace]]:
    ks = Keyspace(prefix)
    await put_jobs(ec, ks, JobSpec(name="alpha", schedule="30 2 * * *", shell="echo secret-alpha"))
    app = create_app(JobStore(ec, ks), token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c, ks


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def _sign_in(c: httpx.AsyncClient) -> None:
    r = await c.post("/ui/login", data={"token": TOKEN})
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"
    cookie = r.headers["set-cookie"]
    assert TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui/" in cookie


@pytest.mark.parametrize(
    "path",
    [
        "/ui/jobs",
        "/ui/jobs/alpha",
        "/ui/workers",
        "/ui/cluster",
        "/ui/edit",
        "/ui/jobs/alpha/runs/x/raw",
    ],
)
async def test_no_session_redirects_to_login_and_shows_no_data(
    setup: tuple[httpx.AsyncClient, Keyspace], path: str
) -> None:
    c, _ = setup
    r = await c.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert "alpha" not in r.text
    c.cookies.set(COOKIE, "forged-session-id", domain="master", path="/ui/")
    r = await c.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"


async def test_wrong_token_gets_the_login_page_and_no_cookie(
    setup: tuple[httpx.AsyncClient, Keyspace],
) -> None:
    c, _ = setup
    for token in ("wrong", "", TOKEN + "x"):
        r = await c.post("/ui/login", data={"token": token})
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert 'name="token"' in r.text and "not valid" in r.text
    r = await c.get("/ui/jobs")
    assert r.status_code == 303


async def test_signed_in_pages_render_and_logout_ends_the_session(
    setup: tuple[httpx.AsyncClient, Keyspace],
) -> None:
    c, _ = setup
    await _sign_in(c)
    r = await c.get("/ui/jobs")
    assert r.status_code == 200 and "alpha" in r.text and "at 02:30" in r.text
    for path in ("/ui/jobs/alpha", "/ui/workers", "/ui/cluster", "/ui/edit?job=alpha"):
        r = await c.get(path)
        assert r.status_code == 200, path
    csrf = _csrf(r.text)
    r = await c.post("/ui/logout", data={"csrf": csrf})
    assert r.status_code == 303
    old = csrf
    r = await c.get("/ui/jobs")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert old  # the old CSRF token went with the session


async def test_post_without_or_with_wrong_csrf_is_403_and_changes_nothing(
    setup: tuple[httpx.AsyncClient, Keyspace],
) -> None:
    c, _ = setup
    await _sign_in(c)
    csrf = _csrf((await c.get("/ui/jobs/alpha")).text)
    for data in ({}, {"csrf": ""}, {"csrf": csrf + "x"}):
        r = await c.post("/ui/jobs/alpha/suspend", data=data)
        assert r.status_code == 403
    r = await c.post(
        "/ui/jobs/alpha/suspend", data={"csrf": csrf}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403
    assert "suspended" not in (await c.get("/ui/jobs/alpha")).text
    r = await c.post("/ui/jobs/alpha/suspend", data={"csrf": csrf}, headers={"Origin": BASE})
    assert r.status_code == 303
    assert "Resume" in (await c.get("/ui/jobs/alpha")).text


async def test_cookie_is_secure_behind_tls(setup: tuple[httpx.AsyncClient, Keyspace]) -> None:
    c, _ = setup
    r = await c.post("/ui/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
    r = await c.post("/ui/login", data={"token": TOKEN})
    assert "Secure" not in r.headers["set-cookie"]


async def test_ui_posts_keep_the_body_bound(setup: tuple[httpx.AsyncClient, Keyspace]) -> None:
    c, _ = setup
    r = await c.post("/ui/login", data={"token": "x" * (DEFAULT_MAX_BODY_BYTES + 1)})
    assert r.status_code == 413


class _ScopedTokens:
    """Two tokens, one read-only: what named tokens with scopes give (duck-typed as
    :class:`Tokens`, whose ``check`` is all the dashboard calls)."""

    def check(self, given: bytes, address: str = "") -> Principal | None:
        if given == b"reader-token":
            return Principal(name="reader", scope="read", address=address)
        if given == TOKEN.encode():
            return Principal(name="token", scope="admin", address=address)
        return None


async def test_read_only_principal_sees_no_buttons_and_cannot_act(
    ec: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    await put_jobs(ec, ks, JobSpec(name="alpha", schedule="* * * * *", shell="echo a"))
    tokens: Any = _ScopedTokens()
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(ui_router(JobStore(ec, ks), tokens, max_spec_bytes=65536))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        r = await c.post("/ui/login", data={"token": "reader-token"})
        assert r.status_code == 303
        page = (await c.get("/ui/jobs/alpha")).text
        for button in ('id="run-now"', 'id="kill"', 'id="suspend"', 'id="delete"'):
            assert button not in page
        csrf = _csrf(page)  # the sign-out form still has one
        forms: list[tuple[str, dict[str, Any]]] = [
            ("/ui/jobs/alpha/run", {}),
            ("/ui/jobs/alpha/kill", {}),
            ("/ui/jobs/alpha/suspend", {}),
            ("/ui/jobs/alpha/delete", {}),
            ("/ui/edit", {"yaml": "jobs: []", "action": "apply"}),
        ]
        for path, extra in forms:
            r = await c.post(path, data={"csrf": csrf, **extra})
            assert r.status_code == 403, path
        kv, _ = await ec.get(ks.job("alpha"))
        assert kv is not None and JobSpec.from_json(kv.value).suspend is False
        triggers, _ = await ec.get_prefix(ks.triggers)
        assert triggers == []


def test_sessions_expire_and_stay_bounded() -> None:
    now = [0.0]
    sessions = Sessions(ttl=10, max_sessions=3, clock=lambda: now[0])
    p = Principal(name="t")
    first = sessions.create(p)
    assert sessions.get(first.id) == first
    made = [sessions.create(p) for _ in range(3)]
    assert len(sessions) == 3 and sessions.get(first.id) is None  # the oldest went
    now[0] = 10.0
    assert sessions.get(made[-1].id) is None  # expired
    assert len({s.csrf for s in made}) == 3 and all(len(s.id) >= 40 for s in made)


async def test_delete_asks_for_confirmation_then_deletes(
    setup: tuple[httpx.AsyncClient, Keyspace], ec: EtcdClient
) -> None:
    c, ks = setup
    await _sign_in(c)
    page = (await c.get("/ui/jobs/alpha/delete")).text
    assert 'id="confirm-delete"' in page
    assert (await ec.get(ks.job("alpha")))[0] is not None  # asking deletes nothing
    mod = re.search(r'name="mod" value="(\d+)"', page)
    assert mod is not None
    r = await c.post("/ui/jobs/alpha/delete", data={"csrf": _csrf(page), "mod": "1"})
    assert r.status_code == 409  # not the revision confirmed: nothing deleted
    assert (await ec.get(ks.job("alpha")))[0] is not None
    r = await c.post("/ui/jobs/alpha/delete", data={"csrf": _csrf(page), "mod": mod.group(1)})
    assert r.status_code == 303
    assert (await ec.get(ks.job("alpha")))[0] is None
    assert (await c.get("/ui/jobs/alpha")).status_code == 404
    r = await c.get("/ui/jobs/alpha/runs/nope/events")
    assert r.status_code == 404


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    q=st.text(max_size=300),
    which=st.text(max_size=30),
    page=st.one_of(st.integers(), st.text(max_size=8)),
)
async def test_jobs_page_answers_any_query_without_a_server_error(
    setup: tuple[httpx.AsyncClient, Keyspace], q: str, which: str, page: object
) -> None:
    c, _ = setup
    if COOKIE not in c.cookies:
        await _sign_in(c)
    r = await c.get("/ui/jobs", params={"q": q, "filter": which, "page": str(page)})
    assert r.status_code in (200, 422), r.text[:300]

"""HttpGuard on its own: what it reads, what it answers, what reaches the app.

The guard is driven directly with ASGI messages, so every ``receive()`` it
makes is counted: "answered without reading the body" is checked, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from scheduler.master.http_guard import HttpGuard
from scheduler.master.tokens import TokenEntry, Tokens, digest

TOKEN = "tok-en"
VIEWER = "viewer-token-0123456789"
MAX = 1000


@dataclass
class Exchange:
    receives: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    app_calls: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def json(self) -> Any:
        return json.loads(self.sent[1]["body"])


async def run(
    method: str,
    path: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    chunks: Iterable[bytes] = (b"",),
    *,
    public_docs: bool = False,
) -> Exchange:
    ex = Exchange()
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(list(chunks)) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        ex.receives += 1
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        ex.sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        got = [await receive(), await receive()]  # the body, then the server's next event
        ex.app_calls.append((scope, got))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    tokens = Tokens(TOKEN, entries=[TokenEntry("viewer", "read", digest(VIEWER.encode()))])
    guard = HttpGuard(app, tokens=tokens, max_body_bytes=MAX, public_docs=public_docs)
    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    await guard(scope, receive, send)  # type: ignore[arg-type]
    return ex


AUTH = (b"authorization", f"Bearer {TOKEN}".encode())


@pytest.mark.parametrize(
    "auth",
    [
        [],
        [(b"authorization", b"Bearer wrong")],
        [(b"authorization", TOKEN.encode())],
        [(b"authorization", b"Basic " + TOKEN.encode())],
        [(b"authorization", b"Bearer " + TOKEN.encode() + b"x")],
        [AUTH, AUTH],  # two Authorization headers: ambiguous, refused
        [(b"authorization", "Bearer tök".encode())],
    ],
)
async def test_no_token_is_401_before_any_read(auth: list[tuple[bytes, bytes]]) -> None:
    ex = await run("PUT", "/v1/jobs/a", [*auth, (b"content-length", b"100000000")], [b"x" * 10])
    assert ex.status == 401 and ex.receives == 0 and not ex.app_calls
    assert ex.headers[b"www-authenticate"] == b"Bearer"
    assert ex.headers[b"connection"] == b"close"  # the announced body is never read
    assert ex.json == {"detail": "missing or wrong bearer token", "problems": []}


async def test_401_without_a_body_keeps_the_connection() -> None:
    ex = await run("GET", "/v1/jobs")
    assert ex.status == 401 and b"connection" not in ex.headers


async def test_unauthenticated_invalid_json_is_401_not_422() -> None:
    ex = await run("POST", "/v1/apply", [(b"content-length", b"5")], [b"{nope"])
    assert ex.status == 401 and ex.receives == 0


@pytest.mark.parametrize("path", ["/v1/health", "/openapi.json", "/docs"])
async def test_public_reads_need_no_token(path: str) -> None:
    ex = await run("GET", path, public_docs=True)
    assert ex.status == 200 and len(ex.app_calls) == 1
    assert (await run("POST", path, public_docs=True)).status == 401  # only GET/HEAD are public


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_need_a_token_unless_public_docs(path: str) -> None:
    assert (await run("GET", path)).status == 401
    ex = await run("GET", path, [(b"authorization", f"Bearer {VIEWER}".encode())])
    assert ex.status == 200 and len(ex.app_calls) == 1


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("PUT", "/v1/jobs/a", "admin"),
        ("DELETE", "/v1/jobs/a", "admin"),
        ("POST", "/v1/apply", "admin"),
        ("POST", "/v1/jobs/a/run", "operate"),
        ("POST", "/v1/jobs/a/kill", "operate"),
        ("POST", "/v1/jobs/a/suspend", "operate"),
        ("POST", "/v1/jobs/a/resume", "operate"),
        ("POST", "/v1/jobs/a/run/x", "admin"),  # not listed: admin (fails closed)
        ("PATCH", "/v1/jobs/a", "admin"),
    ],
)
async def test_a_read_token_is_403_on_a_write_before_any_read(
    method: str, path: str, needed: str
) -> None:
    auth = (b"authorization", f"Bearer {VIEWER}".encode())
    ex = await run(method, path, [auth, (b"content-length", b"100000")], [b"x" * 10])
    assert ex.status == 403 and ex.receives == 0 and not ex.app_calls
    assert ex.headers[b"connection"] == b"close"
    assert ex.json["detail"] == (
        f"token 'viewer' has scope 'read'; this request needs scope {needed!r}"
    )
    assert (await run("GET", "/v1/jobs", [auth])).status == 200


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/login", "/ui/jobs/a"])
async def test_dashboard_paths_pass_to_their_own_auth_but_bodies_stay_bounded(path: str) -> None:
    form = [(b"content-type", b"application/x-www-form-urlencoded")]
    ex = await run("POST", path, [*form, (b"content-length", b"7")], [b"token=x"])
    assert ex.status == 200 and len(ex.app_calls) == 1  # the routes check the session
    ex = await run("POST", path, [*form, (b"content-length", b"1001")], [b"x" * 1001])
    assert ex.status == 413 and not ex.app_calls
    for other in ("/uix", "/v1/ui/jobs", "/ui2/jobs"):
        assert (await run("GET", other)).status == 401


async def test_token_scheme_is_case_insensitive_and_padding_ignored() -> None:
    ex = await run("GET", "/v1/jobs", [(b"authorization", f"bearer   {TOKEN} ".encode())])
    assert ex.status == 200


@pytest.mark.parametrize("length", [b"1001", b"99999999999999999999999", b"1" * 5000])
async def test_content_length_over_the_limit_is_413_unread(length: bytes) -> None:
    ex = await run("PUT", "/v1/jobs/a", [AUTH, (b"content-length", length)], [b"x"])
    assert ex.status == 413 and ex.receives == 0 and not ex.app_calls
    assert ex.headers[b"connection"] == b"close"
    assert "1000 bytes" in ex.json["detail"]


@pytest.mark.parametrize("length", [b"-1", b"1e3", b"\xc2\xb2", b"0x10"])
async def test_content_length_not_a_number_is_400(length: bytes) -> None:
    ex = await run("PUT", "/v1/jobs/a", [AUTH, (b"content-length", length)])
    assert ex.status == 400 and ex.receives == 0 and not ex.app_calls


async def test_chunked_body_is_counted_and_reading_stops_at_the_limit() -> None:
    chunks = [b"x" * 300] * 10  # 3000 bytes, no Content-Length
    ex = await run("PUT", "/v1/jobs/a", [AUTH, (b"transfer-encoding", b"chunked")], chunks)
    assert ex.status == 413 and not ex.app_calls
    assert ex.receives == 4  # 1200 bytes > 1000: nothing read after that


async def test_the_app_gets_the_body_whole_then_the_servers_events() -> None:
    chunks = [b'{"a"', b": ", b"1}"]
    ex = await run("PUT", "/v1/jobs/a", [AUTH, (b"transfer-encoding", b"chunked")], chunks)
    assert ex.status == 200
    ((_, got),) = ex.app_calls
    assert got[0] == {"type": "http.request", "body": b'{"a": 1}', "more_body": False}
    assert got[1] == {"type": "http.disconnect"}


async def test_a_body_of_exactly_the_limit_passes() -> None:
    body = json.dumps({"a": "x" * (MAX - 9)}).encode()
    assert len(body) == MAX
    ex = await run("PUT", "/v1/jobs/a", [AUTH, (b"content-length", b"1000")], [body])
    assert ex.status == 200


@pytest.mark.parametrize(
    ("content_type", "status"),
    [(None, 422), (b"application/json", 422), (b"application/merge-patch+json", 422),
     (b"application/json; charset=utf-8", 422), (b"text/plain", 200)],
)  # fmt: skip
async def test_json_bodies_must_be_strict(content_type: bytes | None, status: int) -> None:
    headers = [AUTH] + ([(b"content-type", content_type)] if content_type else [])
    ex = await run("PUT", "/v1/jobs/a", headers, [b'{"name": "\\ud800"}'])
    assert ex.status == status
    if status == 422:
        assert not ex.app_calls
        (problem,) = ex.json["problems"]
        assert problem["field"] == "body" and "surrogate" in problem["message"]


async def test_client_gone_before_the_body_ends_is_not_answered() -> None:
    ex = Exchange()
    guard = HttpGuard(_never_called, tokens=Tokens(TOKEN), max_body_bytes=MAX)
    events = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        ex.receives += 1
        return events.pop(0)

    async def send(message: dict[str, Any]) -> None:
        ex.sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": "/v1/jobs/a", "headers": [AUTH]}
    await guard(scope, receive, send)  # type: ignore[arg-type]
    assert ex.receives == 2 and ex.sent == []


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app was called")


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        Tokens("")

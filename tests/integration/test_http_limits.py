"""Hostile clients against real sockets: slow or silent connections, floods, big bodies.

The first tests serve a small app through the master's own HTTP stack (uvicorn
with :class:`LimitedH11Protocol`, behind :class:`HttpGuard`), so their timings
are the protocol's alone. The last ones run the real master on a real etcd.
Times are bounded both ways: a connection closed too early fails as surely as
one left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import pytest
import structlog
import uvicorn

from scheduler.config import Config, EtcdConfig, MasterConfig
from scheduler.master.connections import ConnectionTable
from scheduler.master.http_guard import HttpGuard
from scheduler.master.http_protocol import HttpLimits, limited_protocol
from scheduler.master.server import run_master
from scheduler.master.tokens import Tokens
from tests.support import wait_for

TOKEN = "limits-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
REQUEST_TIMEOUT = 0.6
KEEP_ALIVE = 0.4
SLACK = 3.0  # a loaded machine may be late, never early


@dataclass
class Stub:
    port: int
    table: ConnectionTable
    calls: list[bytes]
    release: asyncio.Event


@contextlib.asynccontextmanager
async def stub_server(max_connections: int = 20, max_body: int = 1000) -> AsyncIterator[Stub]:
    calls: list[bytes] = []
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        calls.append(body)
        if scope["path"] == "/slow":
            await release.wait()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    limits = HttpLimits(max_connections, REQUEST_TIMEOUT, KEEP_ALIVE, linger_bytes=8 << 20)
    table = ConnectionTable(max_connections)
    guarded = HttpGuard(app, tokens=Tokens(TOKEN), max_body_bytes=max_body)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        guarded, http=limited_protocol(limits, table), log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started, timeout=10)
        yield Stub(sock.getsockname()[1], table, calls, release)
    finally:
        release.set()
        server.should_exit = True
        async with asyncio.timeout(20):
            await task
        sock.close()


class Conn:
    """A raw client connection; every one opened is closed when the test ends."""

    opened: ClassVar[list[Conn]] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        conn = cls(*await asyncio.open_connection("127.0.0.1", port))
        cls.opened.append(conn)
        return conn

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def read_all(self, timeout: float = 10.0) -> bytes:
        """Everything until the server closes (or resets) the connection."""
        out = b""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionResetError:
                    return out
                if not chunk:
                    return out
                out += chunk

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture(autouse=True)
async def _close_connections() -> AsyncIterator[None]:
    yield
    while Conn.opened:
        await Conn.opened.pop().close()


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _body(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


async def test_a_connection_that_sends_nothing_is_closed_after_request_timeout() -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        start = time.monotonic()
        assert await conn.read_all() == b""  # closed, nothing said: there was no request
        assert REQUEST_TIMEOUT * 0.9 <= time.monotonic() - start <= REQUEST_TIMEOUT + SLACK
        await conn.close()
        await wait_for(lambda: len(stub.table) == 0, timeout=5)


async def test_half_a_head_is_408_after_request_timeout() -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        start = time.monotonic()
        await conn.send("GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        raw = await conn.read_all()
        assert REQUEST_TIMEOUT * 0.9 <= time.monotonic() - start <= REQUEST_TIMEOUT + SLACK
        assert _status(raw) == 408 and "master.request_timeout" in _body(raw)["detail"]
        await conn.close()


async def test_a_trickled_head_does_not_extend_the_deadline() -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        start = time.monotonic()
        head = "GET /v1/health HTTP/1.1\r\nHost: x\r\n" + "X-Pad: y\r\n" * 1000
        reading = asyncio.create_task(conn.read_all())
        for ch in head:  # one byte every 20 ms: a slowloris
            if reading.done():
                break
            with contextlib.suppress(ConnectionError):
                await conn.send(ch)
            await asyncio.wait({reading}, timeout=0.02)
        raw = await reading
        assert time.monotonic() - start <= REQUEST_TIMEOUT + SLACK
        assert _status(raw) == 408
        await conn.close()


async def test_half_a_body_is_408_and_the_app_never_runs() -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        start = time.monotonic()
        await conn.send(f"PUT /v1/jobs/a HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 10\r\n\r\nab")
        raw = await conn.read_all()
        assert REQUEST_TIMEOUT * 0.9 <= time.monotonic() - start <= REQUEST_TIMEOUT + SLACK
        assert _status(raw) == 408 and stub.calls == []
        await conn.close()


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        await conn.send("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            first = await conn.reader.readuntil(b"ok")
        answered = time.monotonic()
        assert _status(first) == 200
        assert await conn.read_all() == b""
        assert KEEP_ALIVE * 0.9 <= time.monotonic() - answered <= KEEP_ALIVE + SLACK
        await conn.close()


async def test_bytes_that_are_not_http_get_a_json_400() -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        await conn.send(b"\x16\x03\x01 hello, I speak TLS\r\n\r\n")
        raw = await conn.read_all()
        assert _status(raw) == 400 and _body(raw)["detail"] == "invalid HTTP request"
        await conn.close()


async def test_a_flood_of_idle_connections_does_not_lock_out_health() -> None:
    async with stub_server(max_connections=20) as stub:
        flood = [await Conn.open(stub.port) for _ in range(200)]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stub.port}") as http:
            r = await http.get("/v1/health", timeout=5)
        assert r.status_code == 200
        assert len(stub.table) <= 20 and stub.table.evicted >= 180
        # the oldest were closed to make room, the newest are still open
        assert await flood[0].read_all() == b""
        assert not flood[-1].reader.at_eof()
        for conn in flood:
            await conn.close()


async def test_when_every_connection_serves_a_newcomer_gets_503() -> None:
    async with stub_server(max_connections=2) as stub:
        busy = [await Conn.open(stub.port) for _ in range(2)]
        for conn in busy:
            await conn.send(f"GET /slow HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n")
        await wait_for(lambda: len(stub.calls) == 2, timeout=10)
        newcomer = await Conn.open(stub.port)
        raw = await newcomer.read_all()
        assert _status(raw) == 503 and "(2)" in _body(raw)["detail"]
        assert stub.table.refused == 1
        stub.release.set()
        for conn in busy:
            async with asyncio.timeout(10):
                assert _status(await conn.reader.readuntil(b"ok")) == 200
            await conn.close()
        await newcomer.close()


@pytest.mark.parametrize(
    ("auth", "status"), [("", 401), (AUTH, 413)], ids=["unauthenticated", "too-large"]
)
async def test_a_100_mb_body_is_answered_from_its_headers(auth: str, status: int) -> None:
    async with stub_server() as stub:
        conn = await Conn.open(stub.port)
        await conn.send(
            f"PUT /v1/jobs/a HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100000000\r\n\r\n"
        )
        reading = asyncio.create_task(conn.read_all())
        sent = 0
        with contextlib.suppress(ConnectionError):
            while not reading.done() and sent < 100_000_000:
                await asyncio.wait_for(conn.send(b"x" * 65536), 5)
                sent += 65536
        raw = await reading
        assert _status(raw) == status and stub.calls == []
        assert sent < 20_000_000  # the server stopped reading: the rest was never taken
        await conn.close()


async def test_an_early_answer_reaches_a_client_that_sends_its_whole_body() -> None:
    async with (
        stub_server() as stub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{stub.port}") as http,
    ):
        r = await http.put("/v1/jobs/a", content=b"x" * 3_000_000)
        assert r.status_code == 401 and r.json()["detail"] == "missing or wrong bearer token"
        r = await http.put(
            "/v1/jobs/a", content=b"x" * 3_000_000, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 413 and "master.max_body_bytes" in r.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"y" * 100

        r = await http.put(
            "/v1/jobs/a", content=chunks(), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 413
        assert (await http.get("/v1/health")).status_code == 200
        assert stub.calls == [b""]


# the real master ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def master(etcd_endpoints: list[str], prefix: str) -> AsyncIterator[int]:
    port = _free_port()
    cfg = Config(
        etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix),
        master=MasterConfig(
            listen=f"127.0.0.1:{port}",
            token=TOKEN,
            max_connections=50,
            request_timeout=2,
            keep_alive_timeout=1,
        ),
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_master(cfg, ready=ready, stop=stop))
    async with asyncio.timeout(20):
        await ready.wait()
    try:
        yield port
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def test_master_stays_small_and_answers_health_under_attack(
    master: int, caplog: pytest.LogCaptureFixture
) -> None:
    peak_before = _peak_rss()
    with structlog.testing.capture_logs() as logs:
        idle = [await Conn.open(master) for _ in range(500)]
        garbage = [await Conn.open(master) for _ in range(20)]
        for conn in garbage:
            await conn.send(b"NOT HTTP\r\n\r\n")
        bodies = [await Conn.open(master) for _ in range(5)]
        for conn in bodies:
            await conn.send(
                b"PUT /v1/jobs/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
            )

        async def push(conn: Conn) -> bytes:
            reading = asyncio.create_task(conn.read_all(timeout=20))
            with contextlib.suppress(ConnectionError, TimeoutError):
                for _ in range(100_000_000 // 65536):
                    if reading.done():
                        break
                    await asyncio.wait_for(conn.send(b"x" * 65536), 5)
            return await reading

        pushing = [asyncio.create_task(push(c)) for c in bodies]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{master}") as http:
            for _ in range(5):
                r = await http.get("/v1/health", timeout=5)
                assert r.status_code == 200 and r.json()["status"] == "ok"
        answers = await asyncio.gather(*pushing)
    assert all(_status(a) == 401 for a in answers if a), answers
    assert _peak_rss() - peak_before < 100 * 1024 * 1024
    limit_warnings = [e for e in logs if "connection limit" in e["event"]]
    assert len(limit_warnings) == 1
    invalid = [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
    assert len(invalid) <= 1  # 20 bad requests, one line
    for conn in idle + garbage + bodies:
        await conn.close()


async def test_master_refuses_unauthenticated_invalid_json_with_401(master: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{master}") as http:
        r = await http.post("/v1/apply", content=b"{not json")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await http.post(
            "/v1/apply", content=b"{not json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 422

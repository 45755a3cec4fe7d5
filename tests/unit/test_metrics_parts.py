"""The metrics' small parts: reason labels, etcd op labels, the worker's HTTP responder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from scheduler.config import ConfigError, WorkerConfig
from scheduler.metrics import ETCD_OPS, etcd_op
from workers import health_http
from workers.accounting import UNCLAIMED
from workers.health_http import HealthServer
from workers.metrics import MISSED_REASONS, missed_reason
from workers.missed import AT_CAPACITY, DEADLINE, NO_ELIGIBLE


def test_missed_reasons_of_the_messages_the_worker_writes() -> None:
    default = DEADLINE
    assert missed_reason(default) == "deadline"
    assert missed_reason(AT_CAPACITY) == "capacity"
    assert missed_reason(f"{NO_ELIGIBLE}: no live worker has the labels (a=b)") == (
        "no_eligible_worker"
    )
    assert missed_reason(UNCLAIMED + " (and about 5 later ticks before x)") == "unclaimed"
    assert {missed_reason(m) for m in (default, UNCLAIMED, NO_ELIGIBLE, "at capacity")} == set(
        MISSED_REASONS
    )


@pytest.mark.parametrize(
    ("what", "op"),
    [
        ("txn", "txn"),
        ("get /cron/workers/w1", "get"),
        ("read revision", "get"),
        ("list /cron/jobs/", "list"),
        ("count /cron/jobs/", "count"),
        ("put /cron/x", "put"),
        ("delete /cron/x", "delete"),
        ("compact 12", "compact"),
        ("status", "status"),
        ("lease grant", "lease"),
        ("lease ttl", "lease"),
        ("keepalive", "keepalive"),
        ("authenticate", "auth"),
        ("something new", "other"),
    ],
)
def test_etcd_op_labels_are_a_fixed_set(what: str, op: str) -> None:
    assert etcd_op(what) == op
    assert op in ETCD_OPS


@pytest.mark.parametrize("listen", ["", "off", "OFF", " off "])
def test_worker_listen_off(listen: str) -> None:
    assert WorkerConfig(listen=listen).listen == ""


def test_worker_listen_default_and_errors() -> None:
    assert WorkerConfig().listen == "127.0.0.1:8071"
    assert WorkerConfig(listen="[::1]:9000").listen == "[::1]:9000"
    for bad in ("8071", "host", "host:port", "127.0.0.1:99999", ":8071"):
        with pytest.raises(ValueError, match="host:port"):
            WorkerConfig(listen=bad)
    with pytest.raises(ConfigError):
        health_http.parse_listen("nonsense")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _request(port: int, raw: bytes, *, eof: bool = False) -> bytes:
    """Send ``raw`` and read the answer to the end (b"": closed unanswered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        if eof:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        await _close(writer)


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    ready = {"why": "no etcd session"}
    srv = HealthServer("127.0.0.1:0", metrics=lambda: b"m 1\n", readiness=lambda: ready["why"])
    srv.ready = ready  # type: ignore[attr-defined]
    await srv.start()
    yield srv
    await srv.close()


async def test_health_responder(server: HealthServer) -> None:
    port = server.port
    out = await _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in out
    out = await _request(port, b"GET /readyz HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503 ") and out.endswith(
        b'{"ready": false, "reason": "no etcd session"}\n'
    )
    server.ready["why"] = ""  # type: ignore[attr-defined]
    out = await _request(port, b"GET /readyz?verbose=1 HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    out = await _request(port, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\nm 1\n")
    assert b"Content-Type: text/plain; version=0.0.4" in out
    out = await _request(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n")
    assert (await _request(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
    assert (await _request(port, b"GET /x HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
    assert (await _request(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")


async def test_health_responder_bounds(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = server.port
    # a head larger than MAX_HEAD, or one cut short: closed unanswered
    big = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * (health_http.MAX_HEAD + 10) + b"\r\n\r\n"
    assert await _request(port, big) == b""
    assert await _request(port, b"GET /healthz HTTP/1.1\r\n", eof=True) == b""
    # a client that sends nothing is dropped after READ_TIMEOUT
    monkeypatch.setattr(health_http, "READ_TIMEOUT", 0.2)
    assert await _request(port, b"") == b""
    # past MAX_CONNECTIONS at once, the extra ones are closed unanswered
    monkeypatch.setattr(health_http, "READ_TIMEOUT", 5.0)
    monkeypatch.setattr(health_http, "MAX_CONNECTIONS", 2)
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await asyncio.sleep(0.1)  # let the server accept them
    assert await _request(port, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
    for _, w in idle:
        await _close(w)
    await asyncio.sleep(0.1)
    out = await _request(port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")

"""The test rig itself: etcd processes, the TCP proxy, the fixtures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devtools import etcd_binary
from devtools.etcd_process import (
    EtcdCluster,
    EtcdMember,
    find_etcd_binary,
    free_port,
    reserve_ports,
)
from tests.support import wait_for, wait_until
from tests.support.proxy import ProxyGroup, TcpProxy

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(url: str, body: dict[str, Any] | None = None, timeout: float = 2.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with _HTTP.open(urllib.request.Request(url, data=data), timeout=timeout) as r:
        return json.loads(r.read())


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _put(client_url: str, key: str, value: str) -> None:
    _call(f"{client_url}/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


def _get(client_url: str, key: str) -> str | None:
    kvs = _call(f"{client_url}/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists"; the member reaps its process, so this is rare.
    return True


# --------------------------------------------------------------------------- fixtures


def test_etcd_fixture_answers_health(etcd: EtcdCluster, etcd_endpoints: list[str]) -> None:
    assert etcd_endpoints == etcd.endpoints
    assert len(etcd_endpoints) == 1
    host, port = etcd_endpoints[0].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert _call(f"http://{host}:{port}/health")["health"] == "true"
    assert etcd.leader_index() == 0
    member = etcd.members[0]
    assert member.pid is not None and member.running
    assert member.log_path.exists()


def test_prefix_is_unique_per_test_and_names_it(
    prefix: str, request: pytest.FixtureRequest
) -> None:
    assert re.fullmatch(r"/t/[a-z0-9-]+-[0-9a-f]{8}/cron", prefix), prefix
    assert "test-prefix-is-unique" in prefix
    other = request.getfixturevalue("prefix")  # same test: same value (fixture cache)
    assert other == prefix


def test_prefix_sanitises_parametrised_names() -> None:
    from tests.conftest import _sanitise

    assert _sanitise("test_x[a/b-C]") == "test-x-a-b-c"
    assert len(_sanitise("t" * 200)) <= 40
    assert _sanitise("[]") == "test"


# --------------------------------------------------------------------------- binary, ports


def test_find_etcd_binary_prefers_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "my-etcd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("ETCRON_ETCD_BIN", str(fake))
    assert find_etcd_binary() == str(fake)
    monkeypatch.setenv("ETCRON_ETCD_BIN", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="ETCRON_ETCD_BIN"):
        find_etcd_binary()


def test_find_etcd_binary_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETCRON_ETCD_BIN", raising=False)
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setattr(etcd_binary, "_is_executable_file", lambda _p: False)
    with pytest.raises(RuntimeError, match=r"make venv.*scripts/ensure-etcd"):
        find_etcd_binary()


def test_reserved_ports_are_distinct_loopback_ports() -> None:
    ports = reserve_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 <= p <= 65535 for p in ports)
    assert 1024 <= free_port() <= 65535


# --------------------------------------------------------------------------- processes


def test_member_pause_resume_and_restart_keeps_data(tmp_path: Path) -> None:
    with EtcdMember("solo", tmp_path / "solo") as m:
        assert "--listen-client-urls" in m.command()
        assert all("0.0.0.0" not in a for a in m.command())
        _put(m.client_url, "/rig/k", "v1")
        m.pause()
        assert not m.healthy(timeout=0.3)
        m.resume()
        wait_until(m.healthy, timeout=10)
        old_pid = m.pid
        m.restart()
        assert m.pid != old_pid and m.running
        assert _get(m.client_url, "/rig/k") == "v1"
    assert not m.running
    assert old_pid is not None and not _alive(old_pid)


def test_member_start_failure_reports_log(tmp_path: Path) -> None:
    m = EtcdMember("bad", tmp_path / "bad", extra_args=["--no-such-flag"])
    m.start()
    with pytest.raises(RuntimeError, match="exited with"):
        m.wait_ready(timeout=20)
    m.stop()


def test_three_member_cluster_survives_leader_kill(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path, 3) as cluster:
        assert len(set(cluster.endpoints)) == 3
        leader = cluster.wait_for_leader(timeout=15)
        follower = (leader + 1) % 3
        _put(cluster.members[leader].client_url, "/rig/before", "1")

        old_pid = cluster.members[leader].pid
        cluster.members[leader].kill()
        assert not cluster.members[leader].running
        new_leader = cluster.wait_for_leader(timeout=15, exclude=[leader])
        assert new_leader != leader

        # The surviving quorum still takes writes and still has the old data.
        _put(cluster.members[follower].client_url, "/rig/after", "2")
        survivor = next(i for i in range(3) if i not in (leader, follower))
        assert _get(cluster.members[survivor].client_url, "/rig/before") == "1"

        # The killed member rejoins and catches up.
        cluster.members[leader].start()
        cluster.members[leader].wait_ready(timeout=20)
        wait_until(lambda: _get(cluster.members[leader].client_url, "/rig/after") == "2")
        assert cluster.members[leader].pid != old_pid
    assert not any(m.running for m in cluster.members)


# --------------------------------------------------------------------------- proxy


class Echo:
    """A trivial asyncio echo server that counts its open connections."""

    def __init__(self) -> None:
        self.open = 0
        self.received = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while data := await r.read(65536):
                self.received += len(data)
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            self.open -= 1
            w.transport.abort()

    async def __aenter__(self) -> Echo:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    async with Echo() as e:
        yield e


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    return await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)


async def _roundtrip(r: asyncio.StreamReader, w: asyncio.StreamWriter, payload: bytes) -> bytes:
    w.write(payload)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(payload)), 5)


async def _is_dead(r: asyncio.StreamReader) -> bool:
    """True once the connection is closed or reset (EOF or an error on read)."""
    try:
        return await asyncio.wait_for(r.read(1), 5) == b""
    except (ConnectionError, OSError):
        return True


async def test_proxy_forwards_cuts_and_restores(echo: Echo) -> None:
    async with TcpProxy("127.0.0.1", echo.port) as proxy:
        assert proxy.address.startswith("127.0.0.1:")
        r, w = await _open(proxy.address)
        assert await _roundtrip(r, w, b"hello") == b"hello"
        big = os.urandom(1 << 20)  # bigger than every buffer: exercises back-pressure
        assert await _roundtrip(r, w, big) == big
        assert proxy.connections == 1 and echo.open == 1

        await proxy.cut()
        assert await _is_dead(r)
        w.transport.abort()
        await wait_for(lambda: echo.open == 0, timeout=5, message="upstream side closed")
        assert proxy.connections == 0

        # While cut, new connections are accepted then reset at once.
        r2, w2 = await _open(proxy.address)
        assert await _is_dead(r2)
        w2.transport.abort()
        assert proxy.refused == 1
        assert echo.open == 0

        await proxy.restore()
        r3, w3 = await _open(proxy.address)
        assert await _roundtrip(r3, w3, b"again") == b"again"
        assert proxy.connections == 1
        w3.close()
        await wait_for(lambda: proxy.connections == 0 and echo.open == 0, timeout=5)
    assert echo.open == 0


async def test_proxy_blackhole_drops_bytes_then_resets_on_restore(echo: Echo) -> None:
    async with TcpProxy("127.0.0.1", echo.port) as proxy:
        r, w = await _open(proxy.address)
        assert await _roundtrip(r, w, b"ping") == b"ping"
        await proxy.cut(blackhole=True)
        w.write(b"lost")
        await w.drain()
        with pytest.raises(TimeoutError):  # bounded check that nothing comes back
            await asyncio.wait_for(r.readexactly(4), 0.3)
        assert echo.received == 4  # only "ping" ever reached the server
        assert proxy.connections == 1  # the socket is held open, silently

        await proxy.restore()
        assert await _is_dead(r)
        w.transport.abort()
        r2, w2 = await _open(proxy.address)
        assert await _roundtrip(r2, w2, b"back") == b"back"
        w2.close()


async def test_proxy_stop_closes_everything(echo: Echo) -> None:
    proxy = TcpProxy("127.0.0.1", echo.port)
    await proxy.start()
    r, w = await _open(proxy.address)
    assert await _roundtrip(r, w, b"x") == b"x"
    await proxy.stop()
    assert await _is_dead(r)
    w.transport.abort()
    await wait_for(lambda: echo.open == 0, timeout=5)
    with pytest.raises(OSError):
        await _open(f"127.0.0.1:{proxy.port}")


async def test_proxy_group_fronts_real_etcd(etcd: EtcdCluster) -> None:
    async with ProxyGroup(etcd.endpoints) as group:
        assert len(group) == 1
        url = f"http://{group.addresses[0]}/health"
        health = await asyncio.to_thread(_call, url)
        assert health["health"] == "true"
        await group.cut()
        with pytest.raises(OSError):
            await asyncio.to_thread(_call, url, None, 2.0)
        await group.restore()
        health = await asyncio.to_thread(_call, url)
        assert health["health"] == "true"

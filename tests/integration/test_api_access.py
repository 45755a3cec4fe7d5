"""API security end to end: a real master over TLS (a test CA made with openssl),
named tokens with scopes from a hashed tokens file, the docs behind auth, and a
public health answer that says nothing about etcd's address."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.config import Config, EtcdConfig, MasterConfig
from scheduler.master.server import MasterConfigError, run_master
from scheduler.master.tokens import TokenEntry, new_token
from tests.integration.test_cli import Result, _env, _free_port, cli
from tests.support.proxy import TcpProxy

ADMIN, OPERATOR, READER = new_token(), new_token(), new_token()
PLAIN = "plain-admin-token-" + "x" * 16
SPEC = {"schedule": "0 0 1 1 *", "shell": "true"}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    d = tmp_path_factory.mktemp("api-certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=etcron test CA", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=etcron master", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
             cwd=d)  # fmt: skip
    return d


def _tokens_file(path: Path) -> Path:
    lines = [
        TokenEntry(name, scope, hashlib.sha256(token.encode()).digest()).line()
        for name, scope, token in [
            ("ops-admin", "admin", ADMIN),
            ("ci", "operate", OPERATOR),
            ("dashboard", "read", READER),
        ]
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Tls:
    url: str
    ca: Path
    prefix: str

    def client(self, token: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, verify=verify, timeout=10, **kw
        )


async def _serving(cfg: Config) -> AsyncIterator[None]:
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_master(cfg, ready=ready, stop=stop))
    try:
        async with asyncio.timeout(20):
            done, _ = await asyncio.wait(
                [task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
            )
        if task in done:
            task.result()  # the master's error, if it stopped
        yield
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


@pytest.fixture(scope="module")
async def tls_master(
    etcd_endpoints: list[str], certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Tls]:
    port = _free_port()
    prefix = f"/t/api-access-{port}/cron"
    tokens = _tokens_file(tmp_path_factory.mktemp("tokens") / "tokens.yaml")
    cfg = Config(
        etcd=EtcdConfig(endpoints=etcd_endpoints, prefix=prefix),
        master=MasterConfig(
            listen=f"127.0.0.1:{port}",
            tokens_file=tokens,
            token=PLAIN,
            tls_cert_file=certs / "server.crt",
            tls_key_file=certs / "server.key",
            request_timeout=2,
        ),
    )
    async for _ in _serving(cfg):
        yield Tls(f"https://127.0.0.1:{port}", certs / "ca.crt", prefix)


# TLS ------------------------------------------------------------------------------------


async def test_master_serves_https_that_httpx_verifies_with_the_test_ca(tls_master: Tls) -> None:
    async with tls_master.client(ADMIN) as http:
        r = await http.get("/v1/jobs")
        assert r.status_code == 200 and r.json()["jobs"] == []
        assert r.extensions["http_version"] == b"HTTP/1.1"
    async with httpx.AsyncClient(base_url=tls_master.url, timeout=10) as untrusting:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.get("/v1/health")
    plain = tls_master.url.replace("https://", "http://")
    async with httpx.AsyncClient(base_url=plain, timeout=10) as http:
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            r = await http.get("/v1/health")
            raise AssertionError(f"plain HTTP answered {r.status_code}")


async def test_a_stalled_tls_handshake_is_closed_after_request_timeout(tls_master: Tls) -> None:
    """asyncio would hold it 60 s; the master bounds it by master.request_timeout (2 s here)."""
    host, port = tls_master.url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        async with asyncio.timeout(8):
            assert await reader.read(1024) == b""  # closed by the server, nothing sent
    finally:
        writer.close()


async def _etcron(tls: Tls, *args: str, token: str = ADMIN, **env: str) -> Result:
    return await cli(*args, env=_env(ETCRON_SERVER=tls.url, ETCRON_TOKEN=token, **env))


async def test_cli_talks_https_with_cacert_or_cli_ca_file(tls_master: Tls, tmp_path: Path) -> None:
    r = await _etcron(tls_master, "get", "jobs", "-o", "json", "--cacert", str(tls_master.ca))
    assert r.code == 0, r.err
    r = await _etcron(tls_master, "get", "jobs", "-o", "json", ETCRON_CACERT=str(tls_master.ca))
    assert r.code == 0, r.err
    config = tmp_path / "cli.yaml"
    config.write_text(f"cli:\n  ca_file: {tls_master.ca}\n")
    r = await _etcron(tls_master, "get", "jobs", "-o", "json", "--config", str(config))
    assert r.code == 0, r.err

    r = await _etcron(tls_master, "get", "jobs")  # the system's CAs do not know the test CA
    assert r.code == 3
    assert "CERTIFICATE_VERIFY_FAILED" in r.err and "--cacert" in r.err
    r = await _etcron(tls_master, "get", "jobs", "--cacert", str(tmp_path / "missing.crt"))
    assert r.code == 2 and "missing.crt" in r.err


async def test_cli_finds_an_https_master_from_the_master_config(
    tls_master: Tls, tmp_path: Path
) -> None:
    port = tls_master.url.rsplit(":", 1)[1]
    config = tmp_path / "c.yaml"
    config.write_text(
        f"master:\n  listen: 0.0.0.0:{port}\n  tls_cert_file: /nonexistent.crt\n"
        f"  tls_key_file: /nonexistent.key\n  token: {ADMIN}\n"
        f"cli:\n  ca_file: {tls_master.ca}\n"
    )
    r = await cli("get", "jobs", "-o", "json", "--config", str(config), env=_env())
    assert r.code == 0, r.err


# scopes ---------------------------------------------------------------------------------


async def test_read_token_reads_and_gets_403_on_every_write(tls_master: Tls) -> None:
    async with tls_master.client(ADMIN) as admin, tls_master.client(READER) as reader:
        assert (await admin.put("/v1/jobs/r", json=SPEC)).status_code == 200
        assert (await reader.get("/v1/jobs/r")).status_code == 200
        assert (await reader.get("/v1/jobs/r/runs")).status_code == 200
        for method, path, body in [
            ("PUT", "/v1/jobs/r", SPEC),
            ("DELETE", "/v1/jobs/r", None),
            ("POST", "/v1/apply", {"jobs": []}),
            ("POST", "/v1/jobs/r/run", None),
            ("POST", "/v1/jobs/r/kill", None),
            ("POST", "/v1/jobs/r/suspend", None),
        ]:
            r = await reader.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert "token 'dashboard' has scope 'read'" in r.json()["detail"]
        r = await admin.get("/v1/jobs/r")
        assert r.json()["spec"]["suspend"] is False  # nothing changed
    r = await _etcron(tls_master, "suspend", "r", token=READER, ETCRON_CACERT=str(tls_master.ca))
    assert r.code == 3 and "(403)" in r.err and "needs scope 'operate'" in r.err


async def test_operate_token_runs_and_kills_but_cannot_write_jobs(tls_master: Tls) -> None:
    async with tls_master.client(ADMIN) as admin, tls_master.client(OPERATOR) as op:
        assert (await admin.put("/v1/jobs/o", json=SPEC)).status_code == 200
        assert (await op.post("/v1/jobs/o/run")).status_code == 202
        assert (await op.post("/v1/jobs/o/kill")).status_code == 202
        assert (await op.post("/v1/jobs/o/suspend")).json()["suspend"] is True
        assert (await op.post("/v1/jobs/o/resume")).json()["suspend"] is False
        r = await op.put("/v1/jobs/o", json={**SPEC, "shell": "rm -rf /"})
        assert r.status_code == 403 and "needs scope 'admin'" in r.json()["detail"]
        assert (await op.delete("/v1/jobs/o")).status_code == 403
        r = await op.post("/v1/apply", json={"jobs": [], "prune": True})
        assert r.status_code == 403
        assert (await admin.get("/v1/jobs/o")).json()["spec"]["shell"] == "true"


async def test_admin_tokens_can_do_everything(tls_master: Tls) -> None:
    for token in (ADMIN, PLAIN):  # a tokens-file admin, and master.token (named "token")
        async with tls_master.client(token) as admin:
            assert (await admin.put("/v1/jobs/a", json=SPEC)).status_code == 200
            assert (await admin.post("/v1/jobs/a/run")).status_code == 202
            assert (await admin.post("/v1/jobs/a/kill")).status_code == 202
            r = await admin.post("/v1/apply", json={"jobs": [{"name": "b", **SPEC}]})
            assert r.status_code == 200 and r.json()["create"] == ["b"]
            assert (await admin.delete("/v1/jobs/a")).status_code == 200
            assert (await admin.delete("/v1/jobs/b")).status_code == 200


async def test_docs_need_a_token_by_default(tls_master: Tls) -> None:
    async with tls_master.client() as anonymous, tls_master.client(READER) as reader:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert (await anonymous.get(path)).status_code == 401, path
        r = await reader.get("/openapi.json")
        assert r.status_code == 200 and "/v1/jobs/{name}" in r.json()["paths"]
        assert (await anonymous.get("/v1/health")).status_code == 200


# start-up refusals ---------------------------------------------------------------------


def _cfg(endpoints: list[str], **master: Any) -> Config:
    return Config(
        etcd=EtcdConfig(endpoints=endpoints, prefix="/t/refused/cron"),
        master=MasterConfig(listen=f"127.0.0.1:{_free_port()}", **master),
    )


async def test_master_refuses_a_short_token_at_start(etcd_endpoints: list[str]) -> None:
    with pytest.raises(MasterConfigError, match=r"master\.token: the token is 15 bytes"):
        await run_master(_cfg(etcd_endpoints, token="x" * 15))


async def test_master_refuses_a_token_file_others_can_read(
    etcd_endpoints: list[str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(new_token())
    token_file.chmod(0o644)
    with pytest.raises(MasterConfigError, match=r"master\.token_file .* mode 0o644.*chmod 600"):
        await run_master(_cfg(etcd_endpoints, token_file=token_file))
    tokens_file = _tokens_file(tmp_path / "tokens.yaml")
    tokens_file.chmod(0o640)
    with pytest.raises(MasterConfigError, match=r"master\.tokens_file .* mode 0o640"):
        await run_master(_cfg(etcd_endpoints, tokens_file=tokens_file))


async def test_master_refuses_half_a_tls_setting(etcd_endpoints: list[str], certs: Path) -> None:
    with pytest.raises(MasterConfigError, match=r"tls_cert_file and master\.tls_key_file go"):
        await run_master(_cfg(etcd_endpoints, token=PLAIN, tls_cert_file=certs / "server.crt"))
    with pytest.raises(MasterConfigError, match="not a PEM certificate and its matching"):
        await run_master(
            _cfg(
                etcd_endpoints,
                token=PLAIN,
                tls_cert_file=certs / "ca.crt",  # does not match server.key
                tls_key_file=certs / "server.key",
            )
        )


# health ---------------------------------------------------------------------------------


async def test_public_health_hides_the_etcd_address_when_etcd_is_down(
    etcd_endpoints: list[str],
) -> None:
    host, port = etcd_endpoints[0].rsplit(":", 1)
    async with TcpProxy(host, int(port)) as proxy:
        address = proxy.address
        listen = f"127.0.0.1:{_free_port()}"
        cfg = Config(
            etcd=EtcdConfig(endpoints=[address], prefix="/t/health/cron", request_timeout=1),
            master=MasterConfig(listen=listen, token=PLAIN),
        )
        async for _ in _serving(cfg):
            async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=10) as http:
                assert (await http.get("/v1/health")).status_code == 200
                await proxy.cut()
                public = await http.get("/v1/health")
                private = await http.get("/v1/health", headers={"Authorization": f"Bearer {PLAIN}"})
            await proxy.restore()
    assert public.status_code == 503 and public.json()["status"] == "unavailable"
    assert address.rsplit(":", 1)[1] not in public.text
    assert "127.0.0.1" not in public.text
    # a token holder gets the details: etcd's error, which does name the address
    assert private.status_code == 503
    assert address.rsplit(":", 1)[1] in private.json()["error"]


def test_fixture_files_are_private(tmp_path: Path) -> None:
    path = _tokens_file(tmp_path / "t.yaml")
    assert os.stat(path).st_mode & 0o077 == 0
    for token in (ADMIN, OPERATOR, READER):
        assert token not in path.read_text()

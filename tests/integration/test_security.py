"""TLS with client certificates and etcd users with one role each, end to end."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.etcd_process import find_etcd_binary, reserve_ports
from scheduler.config import Config, EtcdConfig, WorkerConfig
from scheduler.etcd.client import EtcdAuthError, EtcdClient, EtcdUnavailable
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.roles import create_roles
from scheduler.runs import RunStatus
from tests.integration.test_cli import _env
from tests.integration.test_daemon_errors import daemon, plain_lines
from tests.support import wait_for
from tests.support.cluster import put_jobs, runs_of, workers

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/cron"
WORKER_PW = "worker-secret"
MASTER_PW = "master-secret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "deploy/etcd/make-certs.sh"), str(d)], check=True, capture_output=True
    )
    return d


@pytest.fixture(scope="module")
def tls_etcd(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("tls-etcd")
    cport, pport = reserve_ports(2)
    url = f"https://127.0.0.1:{cport}"
    log = open(d / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            find_etcd_binary(), "--name", "s", "--data-dir", str(d / "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-cluster", f"s=http://127.0.0.1:{pport}",
            "--cert-file", str(certs / "server.crt"), "--key-file", str(certs / "server.key"),
            "--trusted-ca-file", str(certs / "ca.crt"), "--client-cert-auth",
        ],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{cport}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _cfg(
    endpoint: str, certs: Path, who: str, *, user: str | None = None, password: str | None = None
) -> EtcdConfig:
    return EtcdConfig(
        endpoints=[endpoint],
        prefix=PREFIX,
        ca_file=certs / "ca.crt",
        cert_file=certs / f"{who}.crt",
        key_file=certs / f"{who}.key",
        username=user,
        password=password,
        connect_timeout=3,
        request_timeout=3,
    )


async def _connect(cfg: EtcdConfig) -> EtcdClient:
    for _ in range(100):  # etcd may still be starting
        try:
            return await EtcdClient.connect(cfg)
        except EtcdUnavailable:
            await asyncio.sleep(0.1)
    return await EtcdClient.connect(cfg)


@pytest.fixture(scope="module")
async def secured(tls_etcd: str, certs: Path) -> AsyncIterator[str]:
    """Users and roles as deploy/etcd/setup-auth.sh creates them (scheduler/roles.py), then auth on."""
    admin = await _connect(_cfg(tls_etcd, certs, "master"))
    auth = admin.raw.auth
    assert auth is not None
    await auth.user_add("root", "root-secret")
    await auth.role_add("root")
    await auth.user_grant_role("root", "root")
    await create_roles(auth, PREFIX)
    await auth.user_add("etcron-master", MASTER_PW)
    await auth.user_grant_role("etcron-master", "etcron-master")
    await auth.user_add("etcron-worker", WORKER_PW)
    await auth.user_grant_role("etcron-worker", "etcron-worker")
    await auth.auth_enable()
    await admin.close()
    yield tls_etcd


async def test_tls_requires_a_client_certificate(tls_etcd: str, certs: Path) -> None:
    ok = await _connect(_cfg(tls_etcd, certs, "worker"))
    await ok.close()
    no_cert = EtcdConfig(
        endpoints=[tls_etcd], ca_file=certs / "ca.crt", connect_timeout=2, request_timeout=2
    )
    with pytest.raises((EtcdUnavailable, EtcdAuthError)):
        await EtcdClient.connect(no_cert)


async def test_roles_limit_what_each_user_may_write(secured: str, certs: Path) -> None:
    ks = Keyspace(PREFIX)
    master = await _connect(
        _cfg(secured, certs, "master", user="etcron-master", password=MASTER_PW)
    )
    worker = await _connect(
        _cfg(secured, certs, "worker", user="etcron-worker", password=WORKER_PW)
    )
    try:
        await master.put(
            ks.job("probe"), JobSpec(name="probe", schedule="@daily", shell="true").to_json()
        )
        await worker.put(ks.lock("probe"), b"x")
        with pytest.raises(EtcdAuthError):
            await worker.put(ks.job("probe"), b"worker may not define jobs")
        with pytest.raises(EtcdAuthError):
            await EtcdClient.connect(
                _cfg(secured, certs, "worker", user="etcron-worker", password="wrong")
            )
    finally:
        await master.close()
        await worker.close()


async def test_worker_runs_jobs_over_tls_as_its_own_user(
    secured: str, certs: Path, tmp_path: Path
) -> None:
    ks = Keyspace(PREFIX)
    master = await _connect(
        _cfg(secured, certs, "master", user="etcron-master", password=MASTER_PW)
    )
    out = tmp_path / "ran"
    try:
        await put_jobs(
            master, ks, JobSpec(name="secure", schedule="@every 3600s", shell=f"echo ok > {out}")
        )
        await master.put(ks.trigger("secure", "r1"), b"{}")
        cfg = Config(
            etcd=_cfg(secured, certs, "worker", user="etcron-worker", password=WORKER_PW),
            worker=WorkerConfig(id="tls-worker", lease_ttl=3, lease_margin=0.5, default_user=""),
        )
        async with workers([cfg]):

            async def done() -> bool:
                recs = await runs_of(master, ks, "secure")
                return bool(recs) and recs[0].status is RunStatus.SUCCEEDED

            await wait_for(done, timeout=20)
        assert out.read_text() == "ok\n"
    finally:
        await master.close()


async def test_worker_with_wrong_password_exits_3_with_one_line(secured: str, certs: Path) -> None:
    env = {
        "ETCRON_ETCD__ENDPOINTS": secured,
        "ETCRON_ETCD__CA_FILE": str(certs / "ca.crt"),
        "ETCRON_ETCD__CERT_FILE": str(certs / "worker.crt"),
        "ETCRON_ETCD__KEY_FILE": str(certs / "worker.key"),
        "ETCRON_ETCD__USERNAME": "etcron-worker",
        "ETCRON_ETCD__PASSWORD": "wrong",
        "ETCRON_LOG__FORMAT": "json",
    }
    code, err = await daemon("worker", env=_env(**env))
    assert code == 3, err
    [line] = plain_lines(err)
    assert line.startswith("error: etcd refused the worker's credentials"), line
    assert "authentication failed" in line and "Traceback" not in err


async def test_worker_credentials_cannot_make_master_requests(secured: str, certs: Path) -> None:
    """The worker role (scheduler/roles.py) reads the requests masters make and writes
    only what running jobs needs: no job, manual run, kill, budget, leadership or
    master clock can be written with a worker's credentials."""
    ks = Keyspace(PREFIX)
    worker = await _connect(
        _cfg(secured, certs, "worker", user="etcron-worker", password=WORKER_PW)
    )
    master = await _connect(
        _cfg(secured, certs, "master", user="etcron-master", password=MASTER_PW)
    )
    try:
        refused = {
            "job": ks.job("evil"),
            "manual run": ks.trigger("probe", "evil"),
            "kill": ks.killer("probe"),
            "budget": ks.budget,
            "leadership": ks.leader,
            "master clock": ks.master("evil"),
            "outside the keyspace": "/elsewhere/x",
        }
        for what, key in refused.items():
            with pytest.raises(EtcdAuthError):
                await worker.put(key, b"{}")
            if key.startswith(PREFIX):
                assert (await master.get(key))[0] is None, what
        with pytest.raises(EtcdAuthError):
            await worker.delete(ks.jobs, prefix=True)
        with pytest.raises(EtcdAuthError):
            await worker.delete(PREFIX + "/", prefix=True)
        # what it may write: each is needed by a run (and documented in docs/security.md)
        allowed = [
            ks.lock("probe"), ks.tick("probe"), ks.worker("w"), ks.run("probe", "r"),
            ks.output_chunk("probe", "r", 0), ks.taken("probe", "req"), ks.replacing("probe"),
            ks.repair("lock", "probe"),
        ]  # fmt: skip
        for key in allowed:
            await worker.put(key, b"{}")
            await worker.delete(key)
        for key in (ks.jobs, ks.triggers, ks.killers, ks.masters):
            await worker.get_prefix(key)  # reads are allowed
    finally:
        await worker.close()
        await master.close()

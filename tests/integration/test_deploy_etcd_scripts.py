"""deploy/etcd/: make-certs.sh and setup-auth.sh, run for real against a TLS etcd.

setup-auth.sh runs through an ``etcdctl`` shim that records every argv before
handing over to the real etcdctl, so the test sees whether a password ever
reached a command line (where ``/proc/PID/cmdline`` shows it to any local user).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.etcd_process import find_etcd_binary, reserve_ports
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdAuthError, EtcdClient, EtcdUnavailable
from scheduler.keyspace import Keyspace

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/cron"
ETCDCTL = shutil.which("etcdctl")
NAMES = "localhost,127.0.0.1,2001:db8::5,[::1],etcd1.example.net"


def _make_certs(dest: Path, names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "deploy/etcd/make-certs.sh"), str(dest), names],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pki")
    _make_certs(base / "certs", NAMES)
    return base


def test_make_certs_keeps_the_ca_key_out_of_the_distributed_files(pki: Path) -> None:
    certs, ca = pki / "certs", pki / "certs.ca"
    assert sorted(p.name for p in certs.iterdir()) == [
        "ca.crt", "master.crt", "master.key", "server.crt", "server.key", "worker.crt", "worker.key",
    ]  # fmt: skip
    assert (ca / "ca.key").is_file()
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.stat().st_mode) == 0o700
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_make_certs_types_addresses_as_ip_sans(pki: Path) -> None:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(pki / "certs/server.crt"), "-noout", "-ext", "subjectAltName"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    sans = [s.strip() for s in out.splitlines()[1].split(",")]
    assert sans == [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:2001:DB8:0:0:0:0:0:5",
        "IP Address:0:0:0:0:0:0:0:1",
        "DNS:etcd1.example.net",
    ]


def test_make_certs_reuses_its_ca_and_refuses_a_ca_dir_inside_the_output(pki: Path) -> None:
    before = (pki / "certs.ca/ca.crt").read_bytes()
    _make_certs(pki / "certs", NAMES)
    assert (pki / "certs.ca/ca.crt").read_bytes() == before
    subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki / "certs/ca.crt"), str(pki / "certs/worker.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    bad = subprocess.run(
        ["bash", str(ROOT / "deploy/etcd/make-certs.sh"), str(pki / "x"), "h", str(pki / "x/ca")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "must not be inside" in bad.stderr
    assert not (pki / "x").exists()


@pytest.fixture(scope="module")
def tls_etcd(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    certs = pki / "certs"
    d = tmp_path_factory.mktemp("auth-etcd")
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


def _cfg(endpoint: str, certs: Path, who: str, password_file: Path | None) -> EtcdConfig:
    return EtcdConfig(
        endpoints=[endpoint],
        prefix=PREFIX,
        ca_file=certs / "ca.crt",
        cert_file=certs / f"{who}.crt",
        key_file=certs / f"{who}.key",
        username=None if password_file is None else f"etcron-{who}",
        password_file=password_file,
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


def _setup_auth(env: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "deploy/etcd/setup-auth.sh"), PREFIX, str(out)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(ETCDCTL is None, reason="etcdctl not installed (Debian: etcd-client)")
async def test_setup_auth_keeps_passwords_off_command_lines(
    tls_etcd: str, pki: Path, tmp_path: Path
) -> None:
    certs = pki / "certs"
    probe = await _connect(_cfg(tls_etcd, certs, "master", None))  # etcd is up
    await probe.close()
    shim_dir, argv_log, out = tmp_path / "bin", tmp_path / "argv.log", tmp_path / "passwords"
    shim_dir.mkdir()
    shim = shim_dir / "etcdctl"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {ETCDCTL} "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env.update(
        PATH=f"{shim_dir}:{env['PATH']}",
        ETCDCTL_ENDPOINTS=f"https://{tls_etcd}",
        ETCDCTL_CACERT=str(certs / "ca.crt"),
        ETCDCTL_CERT=str(certs / "master.crt"),
        ETCDCTL_KEY=str(certs / "master.key"),
    )
    done = await asyncio.to_thread(_setup_auth, env, out)
    assert done.returncode == 0, done.stderr
    files = {p.name: p for p in out.iterdir()}
    assert sorted(files) == ["etcron-master.password", "etcron-worker.password", "root.password"]
    passwords = {name: p.read_text().strip() for name, p in files.items()}
    assert all(len(pw) >= 16 for pw in passwords.values()), "weak generated passwords"
    for p in files.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    logged = argv_log.read_text()
    assert "user add etcron-worker --interactive=false" in logged  # the shim saw the calls
    for name, pw in passwords.items():
        assert pw not in logged, f"{name}'s password was on an etcdctl command line"
        assert pw not in done.stdout, f"{name}'s password was printed although OUT_DIR was given"

    ks = Keyspace(PREFIX)
    master = await _connect(_cfg(tls_etcd, certs, "master", files["etcron-master.password"]))
    worker = await _connect(_cfg(tls_etcd, certs, "worker", files["etcron-worker.password"]))
    try:
        await master.put(ks.job("probe"), b"{}")
        kv, _ = await worker.get(ks.job("probe"))
        assert kv is not None
        await worker.put(ks.lock("probe"), b"x")
        with pytest.raises(EtcdAuthError):
            await worker.put(ks.job("probe"), b"a worker may not define jobs")
    finally:
        await master.close()
        await worker.close()
    # Auth is on. Without a password etcd authenticates a client by its
    # certificate's CN: the worker certificate alone has the worker's rights.
    cert_only = await _connect(_cfg(tls_etcd, certs, "worker", None))
    try:
        with pytest.raises(EtcdAuthError):
            await cert_only.put(ks.job("probe"), b"a worker may not define jobs")
    finally:
        await cert_only.close()

    again = await asyncio.to_thread(_setup_auth, env, out)
    assert again.returncode == 2 and "not overwriting" in again.stderr
    assert {p.name: p.read_text().strip() for p in out.iterdir()} == passwords

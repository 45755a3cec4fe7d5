"""Session fixtures: a real etcd on free loopback ports, a key prefix per test."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def etcd_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    d: Path = tmp_path_factory.mktemp("etcd")
    cport, pport = _free_port(), _free_port()
    log = open(d / "etcd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary, "--data-dir", str(d / "data"), "--name", "t",
            "--listen-client-urls", f"http://127.0.0.1:{cport}",
            "--advertise-client-urls", f"http://127.0.0.1:{cport}",
            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-cluster", f"t=http://127.0.0.1:{pport}",
        ],
        stdout=log, stderr=log,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{cport}/health", timeout=1) as r:
                if b"true" in r.read():
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError((d / "etcd.log").read_text()[-2000:])
        time.sleep(0.1)
    yield [f"127.0.0.1:{cport}"]
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]
    return f"/t/{name}-{secrets.token_hex(4)}/cron"

"""Session fixtures: a real etcd on free loopback ports, and a key prefix per test.

Fixtures:

* ``etcd`` (session): a running single-member :class:`EtcdCluster`, stopped at the end.
* ``etcd_endpoints`` (session): ``["127.0.0.1:port"]`` of that cluster. Set
  ``ETCRON_TEST_ETCD_ENDPOINTS=host:port[,host:port]`` to use an etcd you run yourself
  instead (then no etcd process is started unless a test asks for ``etcd``).
* ``prefix`` (function): ``/t/<test-name>-<8 hex>/cron``, unique per test, so tests
  sharing the session etcd never see each other's keys.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
from collections.abc import Iterator

import pytest

from devtools.etcd_process import EtcdCluster, etcd_version, find_etcd_binary


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI's timeout, say) ends the run like Ctrl-C: fixtures are torn down, so
    # no etcd is left behind. Only if nobody else handles SIGTERM already.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        binary = find_etcd_binary()
        return f"etcd: {'.'.join(map(str, etcd_version(binary)))} at {binary}"
    except Exception as e:  # the header must never break the run
        return f"etcd: not found ({e})"


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), 1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_endpoints(request: pytest.FixtureRequest) -> list[str]:
    external = os.environ.get("ETCRON_TEST_ETCD_ENDPOINTS", "")
    endpoints = [e.strip() for e in external.split(",") if e.strip()]
    if endpoints:
        return endpoints
    cluster: EtcdCluster = request.getfixturevalue("etcd")
    return cluster.endpoints


def _sanitise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].rstrip("-") or "test"


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"/t/{_sanitise(request.node.name)}-{secrets.token_hex(4)}/cron"

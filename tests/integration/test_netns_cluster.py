"""The multi-host cluster of deploy/netns-cluster.sh, driven end to end (issue 13.8).

Three etcd members, two masters and three workers, each in its own network
namespace with its own 198.18.x address, etcd with TLS and auth (the roles of
scheduler/roles.py), API token (and TLS and signed jobs where configured). The
test applies jobs through the CLI from the root namespace and checks: each tick
runs once; ``etcron logs -f`` follows a run on another host; a worker whose link
goes down loses its lease and its jobs run elsewhere; the worker credentials
cannot write a job.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdAuthError, EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.runs import RunRecord, RunStatus
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from netns_cluster import Cluster  # noqa: E402

ETCRON = str(Path(sys.executable).with_name("etcron"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(
        shutil.which("ip") is None, reason="needs `ip` (iproute2; .ci/run installs it)"
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    c = Cluster(tmp_path_factory.mktemp("netns") / "cluster")
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy/netns_cluster.py"), "up", "--dir", str(c.dir)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield c, c.load()
    finally:
        subprocess.run(
            [sys.executable, str(ROOT / "deploy/netns_cluster.py"), "down", "--dir", str(c.dir)],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert not c.state_file.exists()


def _env(c: Cluster, state: dict[str, Any], master: str = "master0") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCRON_")}
    env.update(
        ETCRON_SERVER=c.server(state, master),
        ETCRON_TOKEN=(c.dir / "secrets/api.token").read_text().strip(),
    )
    env["ETCRON_CACERT"] = str(c.dir / "certs/ca.crt")  # the masters serve TLS
    return env


async def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        ETCRON, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def etcd(cluster: tuple[Cluster, dict[str, Any]]) -> AsyncIterator[EtcdClient]:
    c, state = cluster
    client = await EtcdClient.connect(EtcdConfig.model_validate(c.etcd_config(state, "master")))
    yield client
    await client.close()


async def _runs(etcd: EtcdClient, job: str) -> list[RunRecord]:
    kvs, _ = await etcd.get_prefix(Keyspace("/cron").job_runs(job))
    return [RunRecord.from_json(kv.value) for kv in kvs]


async def test_each_tick_once_across_hosts_and_logs_follow(
    cluster: tuple[Cluster, dict[str, Any]], etcd: EtcdClient, tmp_path: Path
) -> None:
    c, state = cluster
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - name: every-second\n    schedule: '* * * * * *'\n    shell: echo tick\n"
        "  - name: talker\n    schedule: '@every 3600s'\n"
        "    shell: 'echo first; sleep 1; echo second'\n"
    )
    code, out, err = await _cli(_env(c, state), "apply", "-f", str(jobs))
    assert code == 0, (out, err)

    async def ticks() -> list[RunRecord]:
        recs = [r for r in await _runs(etcd, "every-second") if r.status.final]
        return recs if len(recs) >= 8 else []

    recs = await wait_for(ticks, timeout=40)
    by_tick: dict[Any, int] = {}
    for r in recs:
        if r.status is RunStatus.SUCCEEDED:
            by_tick[r.tick] = by_tick.get(r.tick, 0) + 1
    assert by_tick and max(by_tick.values()) == 1, "each tick runs once"
    assert {r.worker for r in recs} <= {"worker0", "worker1", "worker2"}

    # a manual run on some worker host, followed from the root namespace via the other master
    code, out, err = await _cli(_env(c, state, "master1"), "run", "talker")
    assert code == 0, (out, err)
    code, out, err = await _cli(_env(c, state, "master1"), "logs", "-f", "talker", timeout=60)
    assert code == 0 and out.split() == ["first", "second"], (out, err)


async def test_a_worker_cut_off_loses_its_lease_and_its_jobs_move(
    cluster: tuple[Cluster, dict[str, Any]], etcd: EtcdClient
) -> None:
    c, _state = cluster
    ks = Keyspace("/cron")
    await wait_for(lambda: etcd.count_prefix(ks.workers), timeout=10)
    victim = "worker0"
    c.link(victim, up=False)
    try:
        # its registration goes with its lease (TTL 3 s)
        async def gone() -> bool:
            kv, _ = await etcd.get(ks.worker(victim))
            return kv is None

        await wait_for(gone, timeout=20)
        mark = await etcd.revision()

        async def ran_elsewhere() -> bool:
            recs = await _runs(etcd, "every-second")
            late = [r for r in recs if r.status is RunStatus.SUCCEEDED and r.worker != victim]
            kvs, _ = await etcd.get_prefix(ks.job_runs("every-second"))
            return len([kv for kv in kvs if kv.create_revision > mark]) >= 3 and bool(late)

        await wait_for(ran_elsewhere, timeout=30)
        kvs, _ = await etcd.get_prefix(ks.job_runs("every-second"))
        after = [RunRecord.from_json(kv.value) for kv in kvs if kv.create_revision > mark]
        assert all(r.worker != victim for r in after), "nothing new runs on the cut-off host"
    finally:
        c.link(victim, up=True)


async def test_worker_credentials_cannot_define_jobs(
    cluster: tuple[Cluster, dict[str, Any]],
) -> None:
    c, state = cluster
    worker = await EtcdClient.connect(EtcdConfig.model_validate(c.etcd_config(state, "worker")))
    try:
        with pytest.raises(EtcdAuthError):
            await worker.put(Keyspace("/cron").job("evil"), json.dumps({"x": 1}).encode())
        with pytest.raises(EtcdAuthError):
            await worker.put(Keyspace("/cron").trigger("talker", "evil"), b"{}")
    finally:
        await worker.close()

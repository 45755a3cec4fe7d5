"""What a run leaves behind ends with the run (``workers.orphans``), with a real
``etcron worker`` process: a ``setsid`` background process and a double fork."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.procfs import running
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunStatus
from tests.support import wait_for
from tests.support.cluster import WorkerProcess, make_config, put_jobs, runs_of


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


@pytest.mark.slow
async def test_background_processes_end_with_their_run(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    escaped = tmp_path / "setsid.pid"
    forked = tmp_path / "forked.pid"
    shell = (
        f"setsid sh -c 'echo $$ > {escaped}; exec sleep 300' & "
        f"(sh -c 'echo $$ > {forked}; exec sleep 300' &) ; "
        f"while [ ! -s {escaped} ] || [ ! -s {forked} ]; do sleep 0.05; done; exit 0"
    )
    job = JobSpec(name="leaves", schedule="@every 3600s", shell=shell)
    proc = WorkerProcess(make_config(etcd_endpoints, prefix, "reaper"), tmp_path / "w.log")
    proc.start()
    try:
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("leaves", "r1"), b"{}")

        async def ended() -> bool:
            recs = await runs_of(client, ks, "leaves")
            return bool(recs) and recs[0].status is RunStatus.SUCCEEDED

        await wait_for(ended, timeout=30)
        pids = [int(escaped.read_text()), int(forked.read_text())]
        await wait_for(lambda: not any(running(p) for p in pids), timeout=10)
        assert proc.proc is not None and proc.proc.poll() is None, "the worker stays up"
    finally:
        proc.close()
    assert "killed a process left behind by an ended run" in (tmp_path / "w.log").read_text()

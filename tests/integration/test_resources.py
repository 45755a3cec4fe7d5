"""Per-run resource limits (issue 13.5) with the kernel's cgroups, on real processes.

This machine has cgroup v1 hierarchies (memory, pids, cpu) and an empty cgroup v2
tree, so the limits are tested through v1 here; the v2 code path is the same
writes under other file names and was not run here (docs/security.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from tests.integration.test_worker import client as client
from tests.support import wait_for
from tests.support.cluster import make_config, put_jobs, runs_of, workers
from workers.cgroups import CgroupHost

HOST, WHY = CgroupHost.detect()
pytestmark = pytest.mark.skipif(HOST is None, reason=f"no usable cgroups here: {WHY}")
PY = sys.executable


async def _final(client: EtcdClient, ks: Keyspace, name: str) -> RunRecord | None:
    recs = await runs_of(client, ks, name)
    return recs[0] if recs and recs[0].status.final else None


async def _run(client: EtcdClient, ks: Keyspace, etcd: list[str], prefix: str, *jobs: JobSpec,
               **worker: object) -> dict[str, RunRecord]:  # fmt: skip
    async with workers([make_config(etcd, prefix, "res", **worker)]):
        await put_jobs(client, ks, *jobs)
        for job in jobs:
            await client.put(ks.trigger(job.name, "r1"), b"{}")
        out = {}
        for job in jobs:
            out[job.name] = await wait_for(lambda j=job.name: _final(client, ks, j), timeout=30)
        return out


async def test_memory_limit_kills_the_run_and_says_so(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    hog = JobSpec(
        name="hog", schedule="@every 3600s",
        command=[PY, "-c", "b = bytearray(400 * 1024 * 1024); print('survived')"],
        resources={"memory": "64MiB"},
    )  # fmt: skip
    small = JobSpec(
        name="small", schedule="@every 3600s",
        command=[PY, "-c", "b = bytearray(8 * 1024 * 1024); print('fits')"],
        resources={"memory": "64MiB"},
    )  # fmt: skip
    recs = await _run(client, ks, etcd_endpoints, prefix, hog, small)
    assert recs["hog"].status is RunStatus.FAILED, recs["hog"]
    assert "OOM killer" in recs["hog"].message and "64 MiB" in recs["hog"].message
    assert "survived" not in recs["hog"].output_tail
    assert recs["small"].status is RunStatus.SUCCEEDED and "fits" in recs["small"].output_tail


async def test_pids_limit_and_every_descendant_is_inside(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    forks = JobSpec(
        name="forks", schedule="@every 3600s",
        shell="for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait",
        resources={"pids": 4},
    )  # fmt: skip
    where = JobSpec(
        name="where", schedule="@every 3600s",
        shell="grep -E ':(memory|pids):' /proc/self/cgroup; (grep ':pids:' /proc/self/cgroup)",
        resources={"pids": 50, "memory": "32MiB"},
    )  # fmt: skip
    recs = await _run(client, ks, etcd_endpoints, prefix, forks, where)
    assert "fork" in recs["forks"].output_tail.lower() or "resource" in recs["forks"].output_tail
    run_id = recs["where"].run_id
    lines = recs["where"].output_tail.splitlines()
    assert len([ln for ln in lines if f"/etcron/{run_id}-1" in ln]) == 3, lines  # sh and its child
    for ctrl in ("memory", "pids"):  # removed after the run
        assert not (Path("/sys/fs/cgroup") / ctrl / "etcron" / f"{run_id}-1").exists()


async def test_cpu_quota_caps_cpu_time(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str
) -> None:
    """A busy loop for 1.5 s of wall time under a 0.2-core quota gets at most a
    fraction of that in CPU time (the quota bounds it from above; a loaded machine
    can only give it less)."""
    ks = Keyspace(prefix)
    busy = (
        "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\n"
        "print(round(time.process_time() / 1.5, 3))"
    )
    spin = JobSpec(
        name="spin", schedule="@every 3600s", command=[PY, "-c", busy], resources={"cpu": 0.2}
    )
    recs = await _run(client, ks, etcd_endpoints, prefix, spin)
    share = float(recs["spin"].output_tail.split()[-1])
    assert share < 0.5, f"a 0.2-core quota gave {share:.2f} of a core"


async def test_a_host_that_cannot_enforce_limits_runs_nothing_that_asks(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    marker = tmp_path / "ran"
    job = JobSpec(
        name="limited", schedule="@every 3600s", shell=f"touch {marker}",
        resources={"memory": "64MiB"},
    )  # fmt: skip
    rec = (await _run(client, ks, etcd_endpoints, prefix, job, cgroup_root=tmp_path / "none"))[
        "limited"
    ]
    assert rec.status is RunStatus.FAILED and "cannot enforce them" in rec.message, rec
    assert not marker.exists()

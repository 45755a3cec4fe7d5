"""``etcron run`` / ``kill`` (and the job table's run columns) against a real master,
etcd and in-process workers, through the real ``etcron`` script, stdout a pipe."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler.runs import RunRecord
from tests.integration.test_cli import Master, write
from tests.integration.test_cli import m as m
from tests.integration.test_cli import master as master
from tests.integration.test_cli_polish import run
from tests.support import wait_for
from tests.support.cluster import make_config, workers

JOBS = """\
jobs:
  - name: ok
    schedule: "0 0 1 1 *"
    shell: echo hello
  - name: bad
    schedule: "0 0 1 1 *"
    shell: "echo failing >&2; exit 3"
  - name: long
    schedule: "0 0 1 1 *"
    shell: "sleep 60"
  - name: elsewhere
    schedule: "0 0 1 1 *"
    selector: {zone: b}
    shell: echo never
"""
STARTED = re.compile(r"^started (\S+) on (\S+)$", re.M)


@pytest.fixture
async def w1(m: Master, etcd_endpoints: list[str], tmp_path: Path) -> AsyncIterator[Master]:
    """The master with jobs applied and one live worker ``w1`` (labels zone=a)."""
    assert (await run(m, "apply", "-f", str(write(tmp_path, JOBS)))).code == 0
    cfg = make_config(etcd_endpoints, m.ks.prefix, "w1", labels={"zone": "a"})
    async with workers([cfg]):
        yield m


async def record(m: Master, job: str, run_id: str) -> RunRecord:
    kv, _ = await m.etcd.get(m.ks.run(job, run_id))
    assert kv is not None, run_id
    return RunRecord.from_json(kv.value)


async def test_run_says_which_run_and_worker_and_wait_exits_with_its_status(w1: Master) -> None:
    r = await run(w1, "run", "ok")
    assert r.code == 0, r.err
    found = STARTED.search(r.out)
    assert found and found.group(2) == "w1", r.out
    rec = await record(w1, "ok", found.group(1))
    assert rec.manual and rec.request_id, rec  # the run that answers this request

    r = await run(w1, "run", "ok", "--wait")
    assert r.code == 0, (r.out, r.err)
    run_id = STARTED.search(r.out).group(1)  # type: ignore[union-attr]
    assert r.out.splitlines()[-1] == f"succeeded {run_id} (exit 0)", r.out

    r = await run(w1, "run", "bad", "--wait")
    assert r.code == 1, (r.out, r.err)
    run_id = STARTED.search(r.out).group(1)  # type: ignore[union-attr]
    assert r.out.splitlines()[-1] == f"failed {run_id} (exit 3)", r.out
    assert (await record(w1, "bad", run_id)).status == "failed"


async def test_run_refuses_a_job_no_live_worker_can_take(w1: Master) -> None:
    r = await run(w1, "run", "elsewhere")
    assert r.code == 1, (r.out, r.err)
    assert "selector (zone=b) matches no live worker's labels" in r.err, r.err
    assert "run requested" not in r.out
    # nothing was sent (requests answered earlier stay until their lease ends)
    assert await w1.etcd.count_prefix(w1.ks.triggers + "elsewhere/") == 0


async def test_run_not_taken_in_time_says_it_is_still_waiting(m: Master, tmp_path: Path) -> None:
    assert (await run(m, "apply", "-f", str(write(tmp_path, JOBS)))).code == 0
    # a registration with a live lease but no worker process behind it: nobody takes the run
    lease, _ = await m.etcd.grant(30)
    ghost = {"id": "ghost", "labels": {"zone": "a"}, "capacity": 1, "running": 0}
    await m.etcd.put(m.ks.worker("ghost"), json.dumps(ghost).encode(), lease=lease)
    try:
        r = await run(m, "run", "ok", "--pickup", "1")
    finally:
        await m.etcd.revoke(lease)
    assert r.code == 0, (r.out, r.err)
    assert "no worker has taken it after 1 s, still waiting" in r.out, r.out


async def test_kill_says_what_it_killed_or_that_nothing_was_running(w1: Master) -> None:
    r = await run(w1, "kill", "long")
    assert (r.code, r.out.strip()) == (0, "nothing was running for job long"), (r.out, r.err)

    r = await run(w1, "run", "long")
    assert r.code == 0, r.err
    run_id = STARTED.search(r.out).group(1)  # type: ignore[union-attr]

    async def running() -> bool:
        return (await record(w1, "long", run_id)).status == "running"

    await wait_for(running, timeout=10)
    r = await run(w1, "kill", "long")
    assert r.code == 0, (r.out, r.err)
    assert r.out.strip() == f"killed {run_id} on w1", r.out
    assert (await record(w1, "long", run_id)).status == "killed"


def row(out: str, name: str) -> str:
    found = [ln for ln in out.splitlines() if ln.split()[:1] == [name]]
    assert len(found) == 1, (name, out)
    return found[0]


async def test_get_jobs_shows_active_last_and_next_run_and_flags_no_eligible_worker(
    w1: Master,
) -> None:
    assert (await run(w1, "run", "ok", "--wait")).code == 0
    r = await run(w1, "run", "long")
    assert r.code == 0, r.err
    try:
        r = await run(w1, "get", "jobs")
        assert r.code == 0, r.err
        header = r.out.splitlines()[0]
        assert re.search(r"SUSPENDED\s+ACTIVE\s+LAST RUN\s+NEXT RUN\s+COMMAND$", header), header
        assert re.search(r"\sno\s+0\s+succeeded \d+s ago\s+in \d+d\s+echo hello$", row(r.out, "ok"))
        assert re.search(r"\sno\s+1\s+running \d+s ago\s+in \d+d\s+sleep 60$", row(r.out, "long"))
        assert re.search(r"\sno\s+0\s+-\s+in \d+d\s+echo never$", row(r.out, "elsewhere"))
        assert r.err.strip() == (
            "warning: job elsewhere: no eligible worker: its selector (zone=b) matches no "
            "live worker's labels; its ticks are recorded missed"
        ), r.err

        r = await run(w1, "get", "jobs", "-o", "json")  # specs only: it applies again
        assert r.code == 0 and "ACTIVE" not in r.out and "running" not in r.out, r.out
    finally:
        assert (await run(w1, "kill", "long")).code == 0


async def test_apply_warns_about_a_selector_no_live_worker_matches(
    w1: Master, tmp_path: Path
) -> None:
    r = await run(w1, "apply", "-f", str(write(tmp_path, JOBS)))
    assert r.code == 0, r.err
    assert "4 unchanged" in r.out, r.out
    assert "warning: job elsewhere: no eligible worker" in r.err, r.err
    assert "job ok" not in r.err

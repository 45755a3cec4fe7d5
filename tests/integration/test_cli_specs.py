"""Specs in and out of the CLI: durations as written, diff values as YAML, and
``apply`` keeping a server-side ``suspend`` the file does not set."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.integration.test_cli import Master, write
from tests.integration.test_cli import m as m
from tests.integration.test_cli import master as master
from tests.integration.test_cli_polish import run

JOB = """\
jobs:
  - name: backup
    schedule: "0 3 * * *"
    timeout: 10m
    retry_backoff: 1m30s
    shell: /usr/local/bin/backup
"""


async def test_output_prints_durations_as_written_and_applies_again(
    m: Master, tmp_path: Path
) -> None:
    assert (await run(m, "apply", "-f", str(write(tmp_path, JOB)))).code == 0
    stored = json.loads((await m.jobs_in_etcd())["backup"])
    assert stored["timeout"] == 600.0  # stored data unchanged: seconds

    r = await run(m, "get", "job", "backup", "-o", "yaml")
    assert r.code == 0, r.err
    spec = yaml.safe_load(r.out)
    assert (spec["timeout"], spec["retry_backoff"]) == ("10m", "1m30s"), r.out
    r = await run(m, "get", "jobs", "-o", "json")
    assert json.loads(r.out)["jobs"][0]["timeout"] == "10m", r.out

    exported = write(tmp_path, r.out, "exported.yaml")
    r = await run(m, "apply", "-f", str(exported))
    assert r.code == 0 and "1 unchanged" in r.out, (r.out, r.err)


async def test_diff_shows_values_as_a_jobs_file_writes_them(m: Master, tmp_path: Path) -> None:
    assert (await run(m, "apply", "-f", str(write(tmp_path, JOB)))).code == 0
    changed = JOB.replace("timeout: 10m", "timeout: 15m").replace(
        "    retry_backoff: 1m30s\n", "    retry_backoff: 1m30s\n    suspend: true\n"
    )
    r = await run(m, "diff", "-f", str(write(tmp_path, changed, "changed.yaml")))
    assert r.code == 1, (r.out, r.err)
    lines = [ln.strip() for ln in r.out.splitlines()]
    assert "suspend: (not set) -> true" in lines, r.out
    assert "timeout: 10m -> 15m" in lines, r.out
    assert "True" not in r.out and "None" not in r.out and "600.0" not in r.out


async def test_apply_keeps_a_suspend_the_file_does_not_set(m: Master, tmp_path: Path) -> None:
    path = write(tmp_path, JOB)
    assert (await run(m, "apply", "-f", str(path))).code == 0
    assert (await run(m, "suspend", "backup")).code == 0

    r = await run(m, "diff", "-f", str(path))
    assert r.code == 0, (r.out, r.err)  # the file does not own suspend: no change
    r = await run(m, "apply", "-f", str(path))
    assert r.code == 0 and "1 unchanged" in r.out, (r.out, r.err)
    assert json.loads((await m.jobs_in_etcd())["backup"])["suspend"] is True

    explicit = write(
        tmp_path, JOB.replace("    timeout:", "    suspend: false\n    timeout:"), "x.yaml"
    )
    r = await run(m, "apply", "-f", str(explicit))
    assert r.code == 0 and "1 update" in r.out, (r.out, r.err)
    assert "suspend" not in json.loads((await m.jobs_in_etcd())["backup"])  # resumed


async def test_history_shows_start_attempt_and_why_a_run_did_not_run(
    m: Master, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from scheduler.runs import RunRecord, RunStatus

    assert (await run(m, "apply", "-f", str(write(tmp_path, JOB)))).code == 0
    tick = datetime(2026, 1, 1, 3, tzinfo=UTC)
    records = [
        RunRecord(job="backup", run_id="20260101T030000Z-aaaaaa", tick=tick, worker="w1",
                  status=RunStatus.FAILED, attempt=2, start=tick, end=tick, exit_code=1,
                  message="exit status 1"),
        RunRecord(job="backup", run_id="20260102T030000Z-bbbbbb", tick=tick, worker="w1",
                  status=RunStatus.MISSED, message="no eligible worker: no live worker has "
                  "the labels of its selector (zone=b)"),
    ]  # fmt: skip
    for rec in records:
        await m.etcd.put(m.ks.run("backup", rec.run_id), rec.to_json())

    r = await run(m, "history", "backup")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == [
        "RUN", "ID", "STATUS", "TICK", "START", "WORKER", "DURATION", "EXIT", "ATTEMPT", "TOKEN",
        "REASON",
    ], lines[0]  # fmt: skip
    missed = next(ln for ln in lines if "bbbbbb" in ln)
    assert missed.endswith(
        "no eligible worker: no live worker has the labels of its selector (zone=b)"
    )
    failed = next(ln for ln in lines if "aaaaaa" in ln)
    assert " 2026-01-01 03:00:00Z  w1 " in failed and failed.endswith("  exit status 1"), failed
    assert failed.split()[9] == "2", failed  # ATTEMPT

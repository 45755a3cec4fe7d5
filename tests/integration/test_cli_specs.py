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

"""First-hour CLI polish (issue 16), through the real ``etcron`` script and master.

Every run here has ``COLUMNS`` unset and stdout a pipe, as in ``etcron ... | grep``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from scheduler.runs import RunRecord, RunStatus
from tests.integration.test_cli import TOKEN, Master, Result, _env, _free_port, cli, write
from tests.integration.test_cli import m as m
from tests.integration.test_cli import master as master

WORKER = "worker-on-a-rather-long-host-name-0123456789.eu-west-1.compute.internal"
COMMAND = "/usr/local/bin/backup --source /var/lib/postgresql --target s3://bucket/prefix " + (
    "--verbose :smile: [bold]not markup[/bold] " * 3
)
JOBS = f"""\
jobs:
  - name: wide
    schedule: "*/5 * * * *"
    timezone: America/Argentina/Buenos_Aires
    concurrency: allow
    timeout: 90s
    labels: {{team: data}}
    command: {json.dumps(COMMAND.split())}
"""


def pipe_env(**extra: str) -> dict[str, str]:
    env = _env(**extra)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


async def run(m: Master, *args: str, **env: str) -> Result:
    return await cli(*args, env=pipe_env(ETCRON_SERVER=m.url, ETCRON_TOKEN=TOKEN, **env))


def line_with(text: str, needle: str) -> str:
    found = [ln for ln in text.splitlines() if needle in ln]
    assert len(found) == 1, (needle, text)
    return found[0]


# tables -------------------------------------------------------------------------------


async def test_tables_in_a_pipe_print_whole_values_one_row_per_line(
    m: Master, tmp_path: Path
) -> None:
    assert (await run(m, "apply", "-f", str(write(tmp_path, JOBS)))).code == 0
    run_id = "20260101T000000Z-a1b2c3"
    rec = RunRecord(
        job="wide", run_id=run_id, tick=datetime(2026, 1, 1, tzinfo=UTC),
        status=RunStatus.SUCCEEDED, worker=WORKER, fencing_token=987654321012,
        start=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), end=datetime(2026, 1, 1, 0, 0, 4, tzinfo=UTC),
        exit_code=0, message="all good",
    )  # fmt: skip
    await m.etcd.put(m.ks.run("wide", run_id), rec.to_json())

    r = await run(m, "history", "wide")
    assert r.code == 0, r.err
    row = line_with(r.out, run_id)
    assert row.split() == [
        run_id, "succeeded", "2026-01-01", "00:00:00Z", "2026-01-01", "00:00:01Z", WORKER,
        "3s", "0", "1", "987654321012", "-",
    ], row  # fmt: skip
    assert "TOKEN" in r.out.splitlines()[0]

    r = await run(m, "get", "jobs")
    assert r.code == 0, r.err
    row = line_with(r.out, "wide")
    assert row.endswith(COMMAND.strip()), row  # whole, not wrapped, not read as markup/emoji
    assert "America/Argentina/Buenos_Aires" in row and len(r.out.splitlines()) == 2

    r = await run(m, "get", "jobs", "-o", "wide")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0].split()[-5:] == [
        "TIMEOUT", "RETRIES", "SELECTOR", "LABELS", "DESCRIPTION",
    ]  # fmt: skip
    assert re.search(r"\s1m30s\s+0\s+-\s+team=data\s+-$", line_with(r.out, "wide")), r.out

    r = await run(m, "history", "wide", "-o", "wide")
    assert r.code == 0, r.err
    assert line_with(r.out, run_id).endswith("2026-01-01 00:00:04Z  no      all good")

    r = await run(m, "get", "jobs", "-o", "json")
    assert json.loads(r.out)["jobs"][0]["command"] == COMMAND.split()


# help and options ---------------------------------------------------------------------


async def test_help_is_plain_ordered_and_has_examples() -> None:
    r, h = await cli("--help", env=pipe_env()), await cli("-h", env=pipe_env())
    assert r.code == h.code == 0 and r.out == h.out
    listed = re.findall(r"^  (\w+)  ", r.out.split("Commands:")[1], re.MULTILINE)
    assert listed[:5] == ["validate", "apply", "diff", "get", "next"], listed
    assert listed[-10:] == [
        "audit", "rollout", "notifications", "doctor", "keygen", "token", "master", "worker",
        "completion", "version",
    ], listed  # fmt: skip
    assert "Examples:" in r.out and "Exit codes" in r.out
    for args in (["apply"], ["logs"], ["history"], ["diff"], ["get", "jobs"], ["worker"]):
        r = await cli(*args, "-h", env=pipe_env())
        assert r.code == 0, (args, r.err)
        assert "<bool>" not in r.out and "╭" not in r.out, r.out
        if args[0] in ("apply", "logs", "history"):
            assert f"etcron {args[0]} " in r.out.split("Examples:")[1], r.out
    r = await cli("logs", "-h", env=pipe_env())
    assert re.search(r"^  NAME .*the job's name", r.out, re.MULTILINE), r.out
    assert "--mark-stderr" in r.out
    r = await cli("--version", env=pipe_env())
    assert r.code == 0 and re.fullmatch(r"etcron \S+\n", r.out), r.out


async def test_global_options_after_the_command(m: Master) -> None:
    env = pipe_env()  # no ETCRON_SERVER / ETCRON_TOKEN
    r = await cli("get", "jobs", "--server", m.url, "--token", TOKEN, env=env)
    assert r.code == 0, r.err
    r = await cli("history", "nope", f"--server={m.url}", f"--token={TOKEN}", env=env)
    assert r.code == 1 and "not found" in r.err, r.err
    r = await cli("get", "jobs", "--server", m.url, "--token", "wrong", env=env)
    assert r.code == 3 and "401" in r.err


async def test_config_gives_the_server_address_and_the_token(m: Master, tmp_path: Path) -> None:
    port = m.url.rsplit(":", 1)[1]
    env = pipe_env()
    for listen in (f"127.0.0.1:{port}", f"0.0.0.0:{port}"):
        cfg = write(tmp_path, f"master:\n  listen: '{listen}'\n  token: {TOKEN}\n", "c.yaml")
        r = await cli("--config", str(cfg), "get", "jobs", "-o", "json", env=env)
        assert r.code == 0, (listen, r.err)
        r = await cli("get", "jobs", "--config", str(cfg), env=env)
        assert r.code == 0, (listen, r.err)
    dead = _free_port()
    cfg = write(tmp_path, f"master:\n  listen: 127.0.0.1:{dead}\n  token: {TOKEN}\n", "dead.yaml")
    r = await cli("--config", str(cfg), "get", "jobs", env=env)
    assert r.code == 3 and f"127.0.0.1:{dead}" in r.err, r.err
    r = await cli("--config", str(cfg), "--server", m.url, "get", "jobs", env=env)
    assert r.code == 0, "--server wins over the config"


# diff ---------------------------------------------------------------------------------


async def test_diff_exit_codes(m: Master, tmp_path: Path) -> None:
    path = write(tmp_path, JOBS)
    r = await run(m, "diff", "-f", str(path))
    assert r.code == 1 and "create" in r.out, (r.out, r.err)
    assert (await run(m, "apply", "-f", str(path))).code == 0
    r = await run(m, "diff", "-f", str(path))
    assert r.code == 0 and "1 unchanged" in r.out, (r.out, r.err)
    changed = write(tmp_path, JOBS.replace("timeout: 90s", "timeout: 2m"), "changed.yaml")
    r = await run(m, "diff", "-f", str(changed))
    assert r.code == 1 and "timeout" in r.out, (r.out, r.err)
    bad = write(tmp_path, JOBS.replace("*/5 * * * *", "61 * * * *"), "bad.yaml")
    assert (await run(m, "diff", "-f", str(bad))).code == 2
    dead = pipe_env(ETCRON_SERVER=f"http://127.0.0.1:{_free_port()}")
    r = await cli("diff", "-f", str(path), env=dead)
    assert r.code == 3, r.err

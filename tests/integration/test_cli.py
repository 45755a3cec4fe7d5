"""The ``etcron`` command line, run as a process against a real master and etcd."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.runs import RunRecord, RunStatus
from tests.support import wait_for

ETCRON = str(Path(sys.executable).with_name("etcron"))
TOKEN = "cli-test-" + secrets.token_hex(8)
TIMEOUT = 60


@dataclass
class Result:
    code: int
    out: str
    err: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCRON_")}
    env.update(extra)
    env["COLUMNS"] = "200"
    return env


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        ETCRON,
        *args,
        env=env if env is not None else _env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Master:
    url: str
    ks: Keyspace
    etcd: EtcdClient

    def env(self, token: str = TOKEN) -> dict[str, str]:
        return _env(ETCRON_SERVER=self.url, ETCRON_TOKEN=token)

    async def run(self, *args: str, token: str = TOKEN) -> Result:
        return await cli(*args, env=self.env(token))

    async def jobs_in_etcd(self) -> dict[str, bytes]:
        kvs, _ = await self.etcd.get_prefix(self.ks.jobs)
        return {Keyspace.tail(kv.key, self.ks.jobs): kv.value for kv in kvs}


@pytest.fixture(scope="module")
async def master(etcd_endpoints: list[str]) -> AsyncIterator[Master]:
    """One master process for the module, on its own key prefix and a free port."""
    prefix = f"/t/cli-{secrets.token_hex(4)}/cron"
    port = _free_port()
    env = _env(
        ETCRON_ETCD__ENDPOINTS=",".join(etcd_endpoints),
        ETCRON_ETCD__PREFIX=prefix,
        ETCRON_MASTER__LISTEN=f"127.0.0.1:{port}",
        ETCRON_MASTER__TOKEN=TOKEN,
        ETCRON_LOG__FORMAT="json",
    )
    proc = await asyncio.create_subprocess_exec(
        ETCRON, "master", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    client = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:

            async def healthy() -> bool:
                if proc.returncode is not None:
                    raise AssertionError("master exited early")
                try:
                    return (await http.get("/v1/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(healthy, timeout=30)
        yield Master(url, Keyspace(prefix), client)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert proc.stderr is not None
            log = await proc.stderr.read()
            code = await proc.wait()
        await client.delete(prefix, prefix=True)
        await client.close()
    assert code == 0, log.decode()[-2000:]


@pytest.fixture
async def m(master: Master) -> Master:
    await master.etcd.delete(master.ks.jobs, prefix=True)
    return master


GOOD = """\
jobs:
  - name: backup
    schedule: "0 3 * * *"
    timezone: Europe/Berlin
    command: ["/usr/bin/backup", "--all"]
  - name: report
    schedule: "@hourly"
    shell: echo report
"""


def write(tmp_path: Path, text: str, name: str = "jobs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# offline ------------------------------------------------------------------------------


async def test_validate_good_file(tmp_path: Path) -> None:
    r = await cli("validate", "-f", str(write(tmp_path, GOOD)))
    assert r.code == 0, r.err
    assert "2 jobs OK" in r.out


async def test_validate_bad_file_names_file_line_job_field(tmp_path: Path) -> None:
    bad = GOOD.replace('schedule: "@hourly"', 'schedule: "61 * * * *"')
    path = write(tmp_path, bad)
    r = await cli("validate", "-f", str(path))
    assert r.code == 2
    assert "jobs.yaml" in r.err and "report" in r.err and "schedule" in r.err
    assert ":7" in r.err or "line 7" in r.err, r.err


async def test_next_offline_and_usage_errors() -> None:
    r = await cli("next", "--schedule", "0 12 * * *", "--tz", "Europe/Berlin", "-n", "3")
    assert r.code == 0 and len(r.out.strip().splitlines()) == 3
    assert (await cli("next", "--schedule", "0 12 * *")).code == 2
    assert (await cli("next", "--schedule", "@daily", "--tz", "Mars/Base")).code == 2
    assert (await cli("no-such-command")).code == 2
    assert (await cli("get", "jobs", "-o", "xml")).code == 2
    r = await cli("--help")
    assert r.code == 0 and "Exit codes" in r.out
    r = await cli("version")
    assert r.code == 0 and r.out.startswith("etcron ")


# against the master -------------------------------------------------------------------------


async def test_apply_then_get_jobs_json(m: Master, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    r = await m.run("apply", "-f", str(path), "--dry-run")
    assert r.code == 0, r.err
    assert "create" in r.out and await m.jobs_in_etcd() == {}

    r = await m.run("apply", "-f", str(path))
    assert r.code == 0, r.err
    assert "2 create" in r.out

    r = await m.run("get", "jobs", "-o", "json")
    assert r.code == 0, r.err
    jobs = {j["name"]: j for j in json.loads(r.out)["jobs"]}
    assert jobs["backup"]["command"] == ["/usr/bin/backup", "--all"]
    assert jobs["backup"]["timezone"] == "Europe/Berlin"
    assert jobs["report"]["shell"] == "echo report"

    exported = write(tmp_path, r.out, "exported.yaml")  # JSON is YAML: output applies again
    r = await m.run("apply", "-f", str(exported))
    assert r.code == 0 and "2 unchanged" in r.out, (r.out, r.err)

    r = await m.run("get", "jobs")
    assert r.code == 0 and "backup" in r.out and "report" in r.out
    r = await m.run("get", "job", "backup", "-o", "yaml")
    assert r.code == 0 and "Europe/Berlin" in r.out
    r = await m.run("next", "report", "-n", "2")
    assert r.code == 0 and len(r.out.strip().splitlines()) == 2


async def test_diff_and_prune(m: Master, tmp_path: Path) -> None:
    assert (await m.run("apply", "-f", str(write(tmp_path, GOOD)))).code == 0
    changed = (
        "jobs:\n"
        "  - {name: report, schedule: '@hourly', shell: echo changed}\n"
        "  - {name: extra, schedule: '@daily', shell: 'true'}\n"
    )
    path = write(tmp_path, changed, "changed.yaml")
    before = await m.jobs_in_etcd()
    r = await m.run("diff", "-f", str(path), "--prune")
    assert r.code == 1, r.err  # 1: there are changes (as kubectl diff)
    assert "echo changed" in r.out and "extra" in r.out and "backup" in r.out
    assert await m.jobs_in_etcd() == before

    r = await m.run("apply", "-f", str(path), "--prune")
    assert r.code == 0, r.err
    assert sorted(await m.jobs_in_etcd()) == ["extra", "report"]


async def test_suspend_resume_delete_run_kill(m: Master, tmp_path: Path) -> None:
    assert (await m.run("apply", "-f", str(write(tmp_path, GOOD)))).code == 0
    assert (await m.run("suspend", "report")).code == 0
    assert json.loads((await m.jobs_in_etcd())["report"])["suspend"] is True
    assert (await m.run("resume", "report")).code == 0
    assert "suspend" not in json.loads((await m.jobs_in_etcd())["report"])

    r = await m.run("run", "report")  # no worker is registered: nobody can take it
    assert r.code == 1 and "no worker is registered" in r.err, (r.out, r.err)
    assert await m.etcd.count_prefix(m.ks.triggers + "report/") == 0  # nothing was sent
    # a run still "running" whose worker is gone (its lease revoked): kill ends it
    lease, _ = await m.etcd.grant(30)
    await m.etcd.revoke(lease)
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    orphan = RunRecord(job="report", run_id="20260101T000000Z-0rphan", tick=tick,
                       status=RunStatus.RUNNING, worker="gone", lease=lease)  # fmt: skip
    await m.etcd.put(m.ks.run("report", orphan.run_id), orphan.to_json())
    r = await m.run("kill", "report")
    assert r.code == 0 and f"killed {orphan.run_id} (its worker is gone" in r.out, r.out
    kv, _ = await m.etcd.get(m.ks.killer("report"))
    assert kv is not None

    r = await m.run("history", "report", "-o", "json")
    assert r.code == 0
    assert [(x["run_id"], x["status"]) for x in json.loads(r.out)["runs"]] == [
        (orphan.run_id, "killed")
    ]
    r = await m.run("workers", "-o", "json")
    assert r.code == 0 and "workers" in json.loads(r.out)

    assert (await m.run("delete", "job", "report")).code == 0
    assert "report" not in await m.jobs_in_etcd()
    r = await m.run("delete", "job", "report")
    assert r.code == 1 and "not found" in r.err
    assert (await m.run("suspend", "nope")).code == 1
    assert (await m.run("get", "job", "Bad/Name")).code == 2


async def test_apply_with_one_bad_job_writes_nothing(m: Master, tmp_path: Path) -> None:
    bad = GOOD + "  - name: broken\n    schedule: '* * *'\n    shell: x\n"
    r = await m.run("apply", "-f", str(write(tmp_path, bad)))
    assert r.code == 2
    assert "broken" in r.err and "schedule" in r.err
    assert await m.jobs_in_etcd() == {}


async def test_unreachable_and_refused_exit_3(m: Master, tmp_path: Path) -> None:
    path = str(write(tmp_path, GOOD))
    dead = f"http://127.0.0.1:{_free_port()}"
    r = await cli("apply", "-f", path, env=_env(ETCRON_SERVER=dead, ETCRON_TOKEN=TOKEN))
    assert r.code == 3 and "cannot reach" in r.err
    r = await m.run("apply", "-f", path, token="wrong")
    assert r.code == 3 and "401" in r.err
    r = await cli("get", "jobs", env=_env(ETCRON_SERVER=m.url))
    assert r.code == 3
    assert await m.jobs_in_etcd() == {}


BAD_INPUTS = {
    "malformed-yaml": "jobs:\n  - name: a\n    schedule: [unclosed\n",
    "unknown-field": "jobs:\n  - name: a\n    schedule: '@daily'\n    shell: x\n    colour: red\n",
    "bad-cron": "jobs:\n  - name: a\n    schedule: '99 * * * *'\n    shell: x\n",
    "unknown-tz": "jobs:\n  - name: a\n    schedule: '@daily'\n    timezone: Mars/Base\n    shell: x\n",
    "duplicate": "jobs:\n  - {name: a, schedule: '@daily', shell: x}\n"
    "  - {name: a, schedule: '@hourly', shell: y}\n",
    "slash-name": "jobs:\n  - name: a/b\n    schedule: '@daily'\n    shell: x\n",
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_exit_2_and_nothing_written(m: Master, tmp_path: Path, case: str) -> None:
    path = str(write(tmp_path, BAD_INPUTS[case], f"{case}.yaml"))
    validate, apply = await asyncio.gather(
        cli("validate", "-f", path), m.run("apply", "-f", path, "--prune")
    )
    for r in (validate, apply):
        assert r.code == 2, (r.out, r.err)
        assert f"{case}.yaml" in r.err
    assert await m.jobs_in_etcd() == {}


async def test_huge_file_exit_2_and_nothing_written(m: Master, tmp_path: Path) -> None:
    line = "# " + "x" * 1000 + "\n"
    text = GOOD + line * (10 * 1024)  # about 10 MB
    path = str(write(tmp_path, text, "huge.yaml"))
    r = await m.run("apply", "-f", path)
    assert r.code == 2, (r.out, r.err[-500:])
    assert "huge.yaml" in r.err
    assert await m.jobs_in_etcd() == {}


def _one_job(*lines: str) -> str:
    return "jobs:\n  - name: a\n    schedule: '@daily'\n" + "".join(f"    {x}\n" for x in lines)


LIMIT_INPUTS = {  # (file text, "line: job 'a': field 'x': message fragment")
    "output-limit-infinite": (
        _one_job("shell: x", f"output_limit: {'9' * 400}MiB"),
        "5: job 'a': field 'output_limit': expected a size like 100, 512KiB, 1MiB or 10MB; '999",
    ),
    "output-limit-huge": (
        _one_job("shell: x", "output_limit: 100GiB"),
        "5: job 'a': field 'output_limit': output_limit is 100 GiB; at most 16 MiB",
    ),
    "backoff-infinite": (
        _one_job("shell: x", f"retry_backoff: {'9' * 400}s"),
        "5: job 'a': field 'retry_backoff': expected a duration like 30s",
    ),
    "nul-argument": (
        _one_job('command: ["/bin/echo", "a\\0b"]'),
        "4: job 'a': field 'command.1': command argument contains a NUL byte",
    ),
    "nul-env": (
        _one_job("shell: x", "env:", '  HOME: "/root\\0"'),
        "6: job 'a': field 'env.HOME': env value contains a NUL byte",
    ),
    "nul-workdir": (
        _one_job("shell: x", 'workdir: "/srv\\0"'),
        "5: job 'a': field 'workdir': workdir contains a NUL byte",
    ),
}


@pytest.mark.parametrize("case", sorted(LIMIT_INPUTS))
async def test_limits_exit_2_with_location_and_no_traceback(
    m: Master, tmp_path: Path, case: str
) -> None:
    text, expected = LIMIT_INPUTS[case]
    path = write(tmp_path, text, f"{case}.yaml")
    validate, apply = await asyncio.gather(
        cli("validate", "-f", str(path)), m.run("apply", "-f", str(path))
    )
    for r in (validate, apply):
        assert r.code == 2, (r.out, r.err)
        assert f"{path}:{expected}" in r.err, r.err
        assert "Traceback" not in r.err and len(r.err) < 2000
    assert await m.jobs_in_etcd() == {}


async def test_alias_bomb_exit_2_before_anything_is_built_or_sent(
    m: Master, tmp_path: Path
) -> None:
    """208 KB reusing one 200 KB string 2,000 times: before, apply --dry-run took 24 s and
    1.2 GB in the CLI and 1.35 GB in the master."""
    lines = ["jobs:", "  - name: bomb", '    schedule: "@daily"']
    lines += [f"    description: &big {'x' * 200_000}", "    command:"] + ["      - *big"] * 2000
    path = write(tmp_path, "\n".join(lines) + "\n", "bomb.yaml")
    r = await m.run("apply", "-f", str(path), "--dry-run")
    assert r.code == 2, (r.out, r.err[-500:])
    assert f"{path}:5: job 'bomb': field 'command': YAML aliases expand to more than 8 MiB" in r.err
    assert "Traceback" not in r.err and len(r.err) < 2000
    assert await m.jobs_in_etcd() == {}


@pytest.mark.parametrize("since", ["yesterday", "-1h", "1x"])
async def test_logs_since_invalid_is_exit_2_without_traceback(since: str) -> None:
    r = await cli("logs", "somejob", "--since", since)
    assert r.code == 2, (r.out, r.err)
    assert "--since" in r.err and "Traceback" not in r.err + r.out

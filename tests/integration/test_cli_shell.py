"""Shell completion and coloured statuses (issue 16), through the real ``etcron`` script.

Completion is exercised by real bash sourcing ``etcron completion bash`` (the
script then asks ``etcron`` itself), and by the zsh protocol the zsh script uses.
Colours need a terminal: the CLI runs on a pseudo-terminal here.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.runs import RunRecord, RunStatus
from tests.integration.test_cli import ETCRON, TOKEN, Master, _env, cli, write
from tests.integration.test_cli import m as m
from tests.integration.test_cli import master as master

JOBS = """\
jobs:
  - name: backup-db
    schedule: "0 3 * * *"
    command: ["true"]
  - name: backup-files
    schedule: "0 4 * * *"
    command: ["true"]
    suspend: true
  - name: report
    schedule: "0 5 * * *"
    command: ["true"]
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _bash_complete(words: list[str], env: dict[str, str]) -> list[str]:
    """What bash offers for the last word of ``words`` with etcron's completion loaded."""
    array = " ".join(f"'{w}'" for w in words)
    script = (
        "source <(etcron completion bash) || exit 9\n"
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
        "_etcron_completion etcron\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**env, "PATH": f"{Path(ETCRON).parent}:{env.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


async def test_bash_completion_of_commands_options_and_job_names(m: Master, tmp_path: Path) -> None:
    assert (await m.run("apply", "-f", str(write(tmp_path, JOBS)))).code == 0
    env = m.env()
    assert _bash_complete(["etcron", "hi"], env) == ["history"]
    assert "--follow" in _bash_complete(["etcron", "logs", "--f"], env)
    assert _bash_complete(["etcron", "get", ""], env) == ["jobs", "job"]
    # job names come from the server the global options (here the environment) name
    assert _bash_complete(["etcron", "logs", "back"], env) == ["backup-db", "backup-files"]
    assert _bash_complete(["etcron", "history", "rep"], env) == ["report"]
    # an unreachable server completes nothing and prints nothing into the command line
    gone = {**env, "ETCRON_SERVER": "http://127.0.0.1:9"}
    assert _bash_complete(["etcron", "logs", "back"], gone) == []


async def test_zsh_completion_script_and_protocol(m: Master) -> None:
    r = await cli("completion", "zsh")
    assert r.code == 0 and r.out.startswith("#compdef etcron"), r.out
    if shutil.which("zsh"):
        check = await asyncio.to_thread(
            subprocess.run, ["zsh", "-n"], input=r.out, text=True, capture_output=True, timeout=30
        )
        assert check.returncode == 0, check.stderr
    env = {**m.env(), "_ETCRON_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "etcron hist"}
    r = await cli(env=env)
    assert r.code == 0 and '"history"' in r.out, r.out


async def test_completion_for_an_unknown_shell_is_invalid_input() -> None:
    r = await cli("completion", "tcsh")
    assert r.code == 2 and "bash, zsh" in r.err


async def _on_terminal(*args: str, env: dict[str, str]) -> str:
    """Run the CLI with stdout on a pseudo-terminal 120 columns wide; its output."""
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        ETCRON, *args, env={**env, "COLUMNS": "120", "TERM": "xterm-256color"},
        stdout=follower, stderr=follower, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(60):
        while True:
            try:
                data = await loop.run_in_executor(None, os.read, leader, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not data:
                break
            chunks.append(data)
        await proc.wait()
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)
    return b"".join(chunks).decode()


@pytest.fixture
def plain_env(m: Master) -> dict[str, str]:
    env = {k: v for k, v in m.env().items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.pop("COLUMNS", None)
    return env


async def test_statuses_are_coloured_on_a_terminal_only(
    m: Master, tmp_path: Path, plain_env: dict[str, str]
) -> None:
    assert (await m.run("apply", "-f", str(write(tmp_path, JOBS)))).code == 0
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    for run_id, status in (("20260101T030000Z-aaaaaa", RunStatus.SUCCEEDED),
                           ("20260102T030000Z-bbbbbb", RunStatus.FAILED),
                           ("20260103T030000Z-cccccc", RunStatus.MISSED)):  # fmt: skip
        rec = RunRecord(job="backup-db", run_id=run_id, tick=tick, status=status, message="why")
        await m.etcd.put(m.ks.run("backup-db", run_id), rec.to_json())

    shown = await _on_terminal("history", "backup-db", env=plain_env)
    assert "\x1b[32msucceeded\x1b[0m" in shown, shown
    assert "\x1b[31mfailed\x1b[0m" in shown and "\x1b[33mmissed\x1b[0m" in shown
    # colour wraps the word, not the padding: without the codes the columns line up
    rows = [ANSI.sub("", ln) for ln in shown.splitlines() if "backup" in ln or "RUN ID" in ln]
    header = next(ln for ln in shown.splitlines() if "RUN ID" in ln)
    tick_at = ANSI.sub("", header).index("TICK")
    assert rows and all(ln[tick_at - 2 : tick_at] == "  " for ln in rows), rows

    jobs = await _on_terminal("get", "jobs", env=plain_env)
    assert re.search(r"\x1b\[33myes\x1b\[0m", jobs), jobs  # backup-files is suspended

    # NO_COLOR (no-color.org) and a pipe: plain text
    assert "\x1b[" not in await _on_terminal(
        "history", "backup-db", env={**plain_env, "NO_COLOR": "1"}
    )
    piped = await cli("history", "backup-db", env=_env(ETCRON_SERVER=m.url, ETCRON_TOKEN=TOKEN))
    assert piped.code == 0 and "succeeded" in piped.out and "\x1b[" not in piped.out

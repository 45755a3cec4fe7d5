"""``etcron logs`` from another process, through a real master, while the job runs."""

from __future__ import annotations

import asyncio

from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord
from tests.integration.test_cli import ETCRON, Master
from tests.integration.test_cli import master as master
from tests.support import wait_for
from tests.support.cluster import make_config, put_jobs, runs_of, workers

TICKER = 'for i in $(seq 1 25); do echo "line $i"; sleep 0.1; done; echo oops >&2; exit 4'


async def _read_lines(
    proc: asyncio.subprocess.Process, until: str, timeout: float
) -> list[tuple[float, str]]:
    assert proc.stdout is not None
    out: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return out
            line = raw.decode().rstrip("\n")
            out.append((loop.time(), line))
            if until in line:
                return out


async def test_logs_follow_live_then_history(master: Master, etcd_endpoints: list[str]) -> None:
    ks: Keyspace = master.ks
    job = JobSpec(name="ticker", schedule="@every 3600s", shell=TICKER)
    async with workers([make_config(etcd_endpoints, ks.prefix, "logw")]):
        await put_jobs(master.etcd, ks, job)
        assert (await master.run("run", "ticker")).code == 0

        async def started() -> RunRecord | None:
            recs = await runs_of(master.etcd, ks, "ticker")
            return recs[-1] if recs else None

        await wait_for(started, timeout=15)
        proc = await asyncio.create_subprocess_exec(
            ETCRON, "logs", "ticker", "-f", env=master.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            lines = await _read_lines(proc, "line 25", timeout=20)
            assert await asyncio.wait_for(proc.wait(), 10) == 0, "the follow ends with the run"
            assert proc.stderr is not None
            err = (await proc.stderr.read()).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        got = [ln for _, ln in lines if ln.startswith("line ")]
        assert got[-10:] == [f"line {i}" for i in range(16, 26)]
        assert got == [f"line {i}" for i in range(int(got[0].split()[1]), 26)], (
            "in order, nothing lost"
        )
        assert lines[-1][0] - lines[0][0] > 1.0, "lines arrived while the job ran, not at the end"
        rest = (await proc.stdout.read()).decode() if proc.stdout is not None else ""
        assert "oops" in rest and "oops" not in err, "the job's stderr goes to stdout"

        after = await master.run("logs", "ticker", "--stream", "stdout")
        assert after.code == 0 and after.out.splitlines() == [f"line {i}" for i in range(1, 26)]
        hist = await master.run("history", "ticker", "-o", "json")
        runs = __import__("json").loads(hist.out)["runs"]
        assert runs[0]["status"] == "failed" and runs[0]["exit_code"] == 4


async def test_logs_follow_all_runs_shows_headers_and_status(
    master: Master, etcd_endpoints: list[str]
) -> None:
    ks: Keyspace = master.ks
    job = JobSpec(name="twice", schedule="@every 3600s", shell="echo hello $ETCRON_RUN_ID")
    async with workers([make_config(etcd_endpoints, ks.prefix, "logw2")]):
        await put_jobs(master.etcd, ks, job)
        assert (await master.run("run", "twice")).code == 0
        await wait_for(lambda: _final_count(master, ks, "twice", 1), timeout=15)
        proc = await asyncio.create_subprocess_exec(
            ETCRON, "logs", "twice", "-f", "--all-runs", env=master.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            first = await _read_lines(proc, "<== succeeded", timeout=15)
            assert (await master.run("run", "twice")).code == 0
            second = await _read_lines(proc, "<== succeeded", timeout=15)
        finally:
            proc.kill()
            await proc.wait()
    for block in (first, second):
        text = [ln for _, ln in block]
        assert text[0].startswith("==> run ") and "(manual)" in text[0]
        assert text[1].startswith("hello ") and text[-1] == "<== succeeded (exit 0)"
    assert first[0][1] != second[0][1], "a new run, with its own header"


async def _final_count(master: Master, ks: Keyspace, job: str, n: int) -> bool:
    return len([r for r in await runs_of(master.etcd, ks, job) if r.status.final]) >= n


async def test_logs_follow_waits_for_the_first_run_and_marks_stderr(
    master: Master, etcd_endpoints: list[str]
) -> None:
    ks: Keyspace = master.ks
    job = JobSpec(
        name="late", schedule="@every 3600s", shell="echo out-1; echo err-1 >&2; echo out-2"
    )
    async with workers([make_config(etcd_endpoints, ks.prefix, "logw3")]):
        await put_jobs(master.etcd, ks, job)
        assert (await master.run("history", "late", "-o", "json")).out.count("run_id") == 0
        proc = await asyncio.create_subprocess_exec(
            ETCRON, "logs", "late", "-f", env=master.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            waiting = await asyncio.wait_for(proc.stderr.readline(), 15)
            assert waiting.decode() == "waiting for the first run of job 'late' (Ctrl-C to stop)\n"
            assert proc.returncode is None, "it waits instead of exiting 1"
            assert (await master.run("run", "late")).code == 0
            lines = [ln for _, ln in await _read_lines(proc, "\0", timeout=20)]  # to EOF
            assert await asyncio.wait_for(proc.wait(), 10) == 0, "it ends with that run"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        # both streams on stdout; each stream in order (they are read apart)
        assert sorted(lines) == ["err-1", "out-1", "out-2"], lines
        assert lines.index("out-1") < lines.index("out-2")

        plain = await master.run("logs", "late")
        marked = await master.run("logs", "late", "--mark-stderr")
    assert plain.code == marked.code == 0, (plain.err, marked.err)
    assert plain.out.splitlines() == lines and plain.err == ""
    assert marked.out.splitlines() == [
        ln if ln.startswith("out") else "[stderr] " + ln for ln in lines
    ]
    none = await master.run("logs", "late", "--previous")
    assert none.code == 1 and "no previous run" in none.err

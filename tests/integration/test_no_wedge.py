"""No wedged runs (I6): every path that ends a run writes its final record and
releases its lock.

A local log file that cannot be written (read-only, full), a failed spawn, an
exception in the output sink or in the worker's own bookkeeping, a second
SIGTERM, a worker paused past its lease, and ``kill`` of a run whose worker is
gone: each ends with a final record and no lock left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from devtools.procfs import running
from proof.ledger import read as read_ledger
from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient, op_put
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.output_reader import read_output
from scheduler.run_control import WORKER_GONE
from scheduler.runs import LockValue, RunRecord, RunStatus
from scheduler.store import JobStore
from tests.support import wait_for
from tests.support.cluster import (
    WorkerProcess,
    ledger_job,
    make_config,
    put_jobs,
    registration,
    runs_of,
    workers,
)
from workers import runner as runner_mod
from workers.output_sink import EtcdOutput
from workers.worker import Worker

LOG_DROPPED = "local log file dropped for this run (output still goes to etcd)"


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


async def _final(client: EtcdClient, ks: Keyspace, job: str, timeout: float = 15) -> RunRecord:
    async def done() -> RunRecord | None:
        final = [r for r in await runs_of(client, ks, job) if r.status.final]
        return final[-1] if final else None

    rec: RunRecord = await wait_for(done, timeout=timeout)
    return rec


async def _lock_gone(client: EtcdClient, ks: Keyspace, job: str) -> bool:
    return (await client.get(ks.lock(job)))[0] is None


async def _run_once(client: EtcdClient, ks: Keyspace, job: str, request: str = "r") -> RunRecord:
    """Trigger one manual run and wait for its final record."""
    before = {r.run_id for r in await runs_of(client, ks, job)}
    await client.put(ks.trigger(job, request), b"{}")

    async def done() -> RunRecord | None:
        new = [r for r in await runs_of(client, ks, job) if r.run_id not in before]
        return new[0] if new and new[0].status.final else None

    rec: RunRecord = await wait_for(done, timeout=15)
    return rec


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


def _umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _can_mount() -> str:
    """ "" when this test may mount a tmpfs, else why not."""
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs (mount -t tmpfs -o size=64k)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not installed"
    return ""


@contextlib.contextmanager
def _read_only_dir(path: Path) -> Iterator[None]:
    """A log_dir nobody can write: a read-only tmpfs as root (root ignores modes),
    else a directory without write permission."""
    if os.geteuid() == 0:
        if _can_mount():
            pytest.skip(_can_mount())
        _mount_tmpfs(path, "ro,size=64k")
        try:
            yield
        finally:
            _umount(path)
    else:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


def _warnings(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == event and e.get("log_level") == "warning"]


# the local log file is best effort ------------------------------------------------


async def test_read_only_log_dir_loses_only_the_local_copy(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    log_dir = tmp_path / "logs"
    job = JobSpec(name="ro", schedule="@every 3600s", shell="for i in 1 2 3; do echo line $i; done")
    with _read_only_dir(log_dir), structlog.testing.capture_logs() as logs:
        async with workers([make_config(etcd_endpoints, prefix, "w1", log_dir=log_dir)]) as (w,):
            await put_jobs(client, ks, job)
            rec = await _run_once(client, ks, "ro")
            assert await _lock_gone(client, ks, "ro")
            assert not w.runs
    assert rec.status is RunStatus.SUCCEEDED, rec
    text = "".join(s.text for s in await read_output(client, ks, "ro", rec.run_id))
    assert text == "line 1\nline 2\nline 3\n"
    dropped = _warnings(logs, LOG_DROPPED)
    assert len(dropped) == 1, dropped
    assert dropped[0]["run"] == rec.run_id
    assert any(k in dropped[0]["error"] for k in ("Read-only", "Permission")), dropped


async def test_full_log_dir_loses_only_the_local_copy(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    if why := _can_mount():
        pytest.skip(why)
    ks = Keyspace(prefix)
    log_dir = tmp_path / "tiny"
    # ~290 KB of output in many small writes: the 64 KiB file system fills up mid-run
    line = "x" * 90
    job = JobSpec(
        name="full",
        schedule="@every 3600s",
        shell=f'i=0; while [ $i -lt 3000 ]; do echo "$i {line}"; i=$((i+1)); done; echo LAST',
    )
    _mount_tmpfs(log_dir, "size=64k")
    try:
        with structlog.testing.capture_logs() as logs:
            async with workers([make_config(etcd_endpoints, prefix, "w1", log_dir=log_dir)]) as (
                w,
            ):
                await put_jobs(client, ks, job)
                rec = await _run_once(client, ks, "full")
                assert await _lock_gone(client, ks, "full")
                assert not w.runs
        local = log_dir / "full" / f"{rec.run_id}.log"
        local_size = local.stat().st_size if local.exists() else 0
    finally:
        _umount(log_dir)
    assert rec.status is RunStatus.SUCCEEDED, rec
    assert rec.output_bytes > 250_000
    text = "".join(s.text for s in await read_output(client, ks, "full", rec.run_id))
    assert len(text) == rec.output_bytes and text.endswith("2999 " + line + "\nLAST\n")
    assert local_size < rec.output_bytes, "the local copy stopped when the disk filled"
    dropped = _warnings(logs, LOG_DROPPED)
    assert len(dropped) == 1, dropped
    assert "No space left" in dropped[0]["error"], dropped


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this host")
async def test_sink_survives_enospc_at_every_write_and_at_close(
    client: EtcdClient, prefix: str
) -> None:
    """/dev/full fails every write with ENOSPC (no root needed): the sink keeps
    shipping to etcd, warns once, and its close does not raise."""
    ks = Keyspace(prefix)
    with structlog.testing.capture_logs() as logs:
        sink = EtcdOutput(
            client, ks, "devfull", "r1", limit=1024 * 1024, log_file=Path("/dev/full")
        )
        for i in range(200):
            sink.write("stdout", f"{i:04d} {'y' * 500}\n".encode())
        await sink.flush()
    assert sink.total == 200 * 506 and sink.log_file_error.startswith("OSError")
    assert "No space left" in sink.log_file_error
    text = "".join(s.text for s in await read_output(client, ks, "devfull", "r1"))
    assert len(text) == sink.total and text.endswith("0199 " + "y" * 500 + "\n")
    assert len(_warnings(logs, LOG_DROPPED)) == 1


# failures inside the worker ------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"command": ["/nonexistent/etcron-test-program"]}, "cannot start"),
        ({"command": ["true"], "workdir": "/nonexistent/etcron-test-dir"}, "cannot start"),
    ],
    ids=["missing-program", "missing-workdir"],
)
async def test_spawn_failure_is_a_failed_record_and_the_lock_is_released(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, spec: dict[str, Any], why: str
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(name="nostart", schedule="@every 3600s", **spec)
    async with workers([make_config(etcd_endpoints, prefix, "w1")]) as (w,):
        await put_jobs(client, ks, job)
        rec = await _run_once(client, ks, "nostart")
        assert await _lock_gone(client, ks, "nostart")
        assert not w.runs
    assert rec.status is RunStatus.FAILED, rec
    assert why in rec.message and rec.exit_code in (126, 127), rec


class SinkBroke(RuntimeError):
    pass


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise SinkBroke("the sink is on fire")


async def _aboom(*args: Any, **kwargs: Any) -> None:
    raise SinkBroke("the sink is on fire")


@pytest.mark.parametrize(
    ("target", "attr", "replacement", "cause"),
    [
        (EtcdOutput, "__init__", _boom, "output capture could not be set up"),
        (EtcdOutput, "write", _boom, "output capture failed"),
        (EtcdOutput, "flush", _aboom, "output capture failed at the end"),
        (runner_mod, "child_env", _boom, "internal error in the worker"),
    ],
    ids=["sink-setup", "sink-write", "sink-flush", "bookkeeping"],
)
async def test_exception_in_the_worker_fails_the_run_and_releases(
    client: EtcdClient,
    etcd_endpoints: list[str],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    target: object,
    attr: str,
    replacement: Any,
    cause: str,
) -> None:
    ks = Keyspace(prefix)
    job = JobSpec(name="boom", schedule="@every 3600s", shell="echo hello; echo world >&2")
    async with workers([make_config(etcd_endpoints, prefix, "w1")]) as (w,):
        await put_jobs(client, ks, job)
        with monkeypatch.context() as m:
            m.setattr(target, attr, replacement)
            rec = await _run_once(client, ks, "boom", "r1")
        assert rec.status is RunStatus.FAILED, rec
        assert cause in rec.message and "the sink is on fire" in rec.message, rec
        assert await _lock_gone(client, ks, "boom")
        assert not w.runs
        # not wedged: the next run of the same job runs and succeeds
        again = await _run_once(client, ks, "boom", "r2")
        assert again.status is RunStatus.SUCCEEDED, again


# signals ------------------------------------------------------------------------


async def test_second_sigterm_records_killed_and_releases_before_exit(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    pidfile = tmp_path / "pid"
    # prints all along, so the end of the run has output to ship as well as the release
    chatter = "(while true; do echo chatter; sleep 0.01; done) &"
    job = ledger_job(
        "long", ledger, schedule="@every 3600s", pre=f"{chatter} echo $$ > {pidfile}", beats=60
    )
    proc = WorkerProcess(
        make_config(etcd_endpoints, prefix, "twice", drain_grace=60, lease_ttl=30),
        tmp_path / "twice.log",
    )
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "twice"), timeout=20)
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("long", "r1"), b"{}")
        await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=15)
        child = int(pidfile.read_text())
        proc.signal(signal.SIGTERM)

        async def draining() -> bool:
            kv, _ = await client.get(ks.worker("twice"))
            return kv is not None and bool(registration(kv.value).get("draining"))

        await wait_for(draining, timeout=10)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.close()
    assert not running(child)
    (rec,) = await runs_of(client, ks, "long")
    assert rec.status is RunStatus.KILLED, rec
    assert rec.end is not None and rec.output_bytes > 0
    assert await _lock_gone(client, ks, "long")
    assert not await _registered(client, ks, "twice"), "lease revoked"
    assert "end" not in [e.kind for e in read_ledger(ledger)], "killed mid-run"


async def test_kill_waits_for_runs_to_record_and_release_before_closing(
    client: EtcdClient,
    etcd_endpoints: list[str],
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker.kill() (the second signal) in process: when ``wait()`` returns, the
    killed run's record is final and its lock released, even when the last output
    chunk takes a while to reach etcd (injected latency, not a synchronisation)."""
    ks = Keyspace(prefix)
    pidfile = tmp_path / "pid"
    job = JobSpec(
        name="chatty",
        schedule="@every 3600s",
        shell=f"echo $$ > {pidfile}; while true; do echo chatter; sleep 0.01; done",
    )
    real_flush = EtcdOutput.flush

    async def slow_flush(self: EtcdOutput) -> None:
        await asyncio.sleep(0.3)  # a slow etcd for the last chunks
        await real_flush(self)

    monkeypatch.setattr(EtcdOutput, "flush", slow_flush)
    w = Worker(make_config(etcd_endpoints, prefix, "k1", lease_ttl=30))
    await w.start()
    try:
        await put_jobs(client, ks, job)
        await client.put(ks.trigger("chatty", "r1"), b"{}")
        await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=15)
        child = int(pidfile.read_text())
        w.kill()
        await asyncio.wait_for(w.wait(), 30)
    finally:
        if w._main is not None and not w._main.done():
            w.kill()
            await asyncio.wait_for(w.wait(), 30)
    assert not running(child)
    (rec,) = await runs_of(client, ks, "chatty")
    assert rec.status is RunStatus.KILLED and rec.output_bytes > 0, rec
    assert await _lock_gone(client, ks, "chatty")


async def test_paused_past_lease_records_lost_and_leaves_the_new_lock(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("pause", ledger, beats=30)
    proc = WorkerProcess(
        make_config(etcd_endpoints, prefix, "paused", lease_ttl=3), tmp_path / "paused.log"
    )
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "paused"), timeout=20)
        await put_jobs(client, ks, job)
        await wait_for(lambda: any(e.worker == "paused" for e in read_ledger(ledger)), timeout=20)
        (first,) = [r for r in await runs_of(client, ks, "pause") if r.worker == "paused"]
        async with workers([make_config(etcd_endpoints, prefix, "other")]):
            proc.signal(signal.SIGSTOP)
            # the lease expires, the guard kills the child, the other worker takes over
            await wait_for(
                lambda: any(e.worker == "other" for e in read_ledger(ledger)), timeout=20
            )
            lock, _ = await client.get(ks.lock("pause"))
            assert lock is not None and LockValue.model_validate_json(lock.value).worker == "other"
            proc.signal(signal.SIGCONT)

            async def paused_final() -> RunRecord | None:
                recs = await runs_of(client, ks, "pause")
                rec = next(r for r in recs if r.run_id == first.run_id)
                return rec if rec.status.final else None

            rec: RunRecord = await wait_for(paused_final, timeout=15)
            after, _ = await client.get(ks.lock("pause"))
    finally:
        proc.close()
    assert rec.status is RunStatus.LOST, rec
    assert rec.fencing_token > 0 and "lease" in rec.message
    # the late release of the paused worker did not touch the other worker's lock
    assert after is not None and after.create_revision == lock.create_revision
    assert after.create_revision != rec.fencing_token


async def _registered(client: EtcdClient, ks: Keyspace, wid: str) -> bool:
    return (await client.get(ks.worker(wid)))[0] is not None


# kill of a run whose worker is gone ------------------------------------------------


async def test_kill_ends_a_running_record_whose_worker_is_gone(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    ledger = tmp_path / "ledger"
    job = ledger_job("orphan", ledger, beats=60)
    proc = WorkerProcess(
        make_config(etcd_endpoints, prefix, "gone", lease_ttl=30), tmp_path / "gone.log"
    )
    proc.start()
    try:
        await wait_for(lambda: _registered(client, ks, "gone"), timeout=20)
        await put_jobs(client, ks, job)
        await wait_for(lambda: any(e.worker == "gone" for e in read_ledger(ledger)), timeout=20)
        proc.signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.close()
    # the guard revokes the dead worker's lease: the record stays `running`, nobody ends it
    await wait_for(lambda: _lock_gone(client, ks, "orphan"), timeout=10)
    (stuck,) = await runs_of(client, ks, "orphan")
    assert stuck.status is RunStatus.RUNNING
    assert await client.lease_ttl(stuck.lease) <= 0

    # a run of another job whose lease is alive is its worker's business: left alone
    lease, _ = await client.grant(30)
    alive = stuck.model_copy(update={"job": "alive", "run_id": stuck.run_id, "lease": lease})
    await put_jobs(client, ks, JobSpec(name="alive", schedule="@every 3600s", shell="true"))
    await client.put(ks.run("alive", alive.run_id), alive.to_json())

    store = JobStore(client, ks)
    ended = await store.request_kill("orphan")
    assert ended == [stuck.run_id]
    (rec,) = await runs_of(client, ks, "orphan")
    assert rec.status is RunStatus.KILLED and rec.message == WORKER_GONE, rec
    assert rec.end is not None
    assert await store.request_kill("orphan") == [], "a final record is not ended twice"
    assert await store.request_kill("alive") == []
    (untouched,) = await runs_of(client, ks, "alive")
    assert untouched.status is RunStatus.RUNNING
    await client.revoke(lease)

    # the next tick runs
    n = len(read_ledger(ledger))
    async with workers([make_config(etcd_endpoints, prefix, "next")]):
        await wait_for(
            lambda: any(e.worker == "next" and e.kind == "start" for e in read_ledger(ledger)[n:]),
            timeout=15,
        )


async def test_kill_deletes_a_lock_left_at_the_runs_token_on_a_dead_lease(
    client: EtcdClient, prefix: str
) -> None:
    """A lock on no lease (never written by a worker, but the repair must hold):
    deleted only when its create revision is the dead run's fencing token."""
    ks = Keyspace(prefix)
    await put_jobs(client, ks, JobSpec(name="j", schedule="@every 3600s", shell="true"))
    store = JobStore(client, ks)
    lease, _ = await client.grant(5)
    await client.revoke(lease)

    async def stuck_run(run_id: str, lock_value: bytes) -> int:
        rec = RunRecord(
            job="j",
            run_id=run_id,
            tick="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
            status=RunStatus.RUNNING,
            worker="w",
            lease=lease,
        )
        res = await client.txn(
            [], [op_put(ks.lock("j"), lock_value), op_put(ks.run("j", run_id), rec.to_json())]
        )
        return res.revision

    # the lock was created by the run's claim: it goes with the kill
    await stuck_run("20260101T000000Z-aaaaaa", b"mine")
    assert await store.request_kill("j") == ["20260101T000000Z-aaaaaa"]
    assert await _lock_gone(client, ks, "j")
    # a lock created later (another run's): the record ends, the lock stays
    await stuck_run("20260101T000001Z-bbbbbb", b"old")
    await client.delete(ks.lock("j"))
    await client.put(ks.lock("j"), b"someone else")
    assert await store.request_kill("j") == ["20260101T000001Z-bbbbbb"]
    kv, _ = await client.get(ks.lock("j"))
    assert kv is not None and kv.value == b"someone else"

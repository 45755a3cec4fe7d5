"""A daemon's fatal startup error is one ``error:`` line and an exit code, not a traceback."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path

from tests.integration.test_cli import ETCRON, _env, _free_port
from tests.support import wait_for
from tests.support.cluster import WorkerProcess, make_config

TIMEOUT = 60


async def daemon(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``etcron <args>`` to its end; (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        ETCRON, *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def plain_lines(stderr: str) -> list[str]:
    """The stderr lines that are not JSON log lines."""
    out = []
    for line in stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            out.append(line)
    return out


async def test_second_worker_with_the_same_id_exits_2_with_one_line(
    etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "first.log"
    first = WorkerProcess(make_config(etcd_endpoints, prefix, "dup"), log)
    first.start()
    try:
        await wait_for(lambda: "ready" in log.read_text(), timeout=30)
        env = _env(
            ETCRON_ETCD__ENDPOINTS=",".join(etcd_endpoints),
            ETCRON_ETCD__PREFIX=prefix,
            ETCRON_WORKER__ID="dup",
            ETCRON_LOG__FORMAT="json",
        )
        code, err = await daemon("worker", env=env)
        expected = (
            f"error: worker id 'dup' is already registered by a live worker "
            f"(host {socket.gethostname()}, pid {first.pid}); give each worker its own worker.id"
        )
        assert code == 2, err
        assert plain_lines(err) == [expected], err
        assert "Traceback" not in err

        code, err = await daemon("worker", env=env | {"ETCRON_LOG__LEVEL": "debug"})
        assert code == 2 and plain_lines(err) == [expected], err
        assert "WorkerIdInUse" in err, "log level debug: the traceback is in the log"
        assert first.proc is not None and first.proc.poll() is None, "the first worker lives on"
    finally:
        first.close()


async def test_unreadable_tls_file_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "ca.crt"
    env = _env(
        ETCRON_ETCD__CA_FILE=str(missing),
        ETCRON_MASTER__TOKEN="t" * 32,
        ETCRON_MASTER__LISTEN="127.0.0.1:0",
        ETCRON_LOG__FORMAT="json",
    )
    for role in ("worker", "master"):
        code, err = await daemon(role, env=env)
        assert code == 2, (role, err)
        assert plain_lines(err) == [
            f"error: etcd.ca_file {missing}: cannot read: No such file or directory"
        ], (role, err)


async def test_malformed_endpoint_is_one_line_exit_2() -> None:
    env = _env(ETCRON_ETCD__ENDPOINTS="nonsense", ETCRON_LOG__FORMAT="json")
    code, err = await daemon("worker", env=env)
    assert code == 2, err
    assert plain_lines(err) == ["error: etcd.endpoints: 'nonsense' is not host:port"], err


async def test_sigterm_while_waiting_for_etcd_at_start_is_a_clean_stop() -> None:
    env = _env(
        ETCRON_ETCD__ENDPOINTS=f"127.0.0.1:{_free_port()}",  # nobody listens
        ETCRON_ETCD__CONNECT_TIMEOUT="0.5",
        ETCRON_LOG__FORMAT="json",
    )
    proc = await asyncio.create_subprocess_exec(
        ETCRON, "worker", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            while json.loads(await proc.stderr.readline())["event"] != "etcd unreachable, waiting":
                pass
            proc.send_signal(signal.SIGTERM)
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, rest
    assert plain_lines(rest) == [], rest

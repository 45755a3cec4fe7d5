"""Helpers to run etcron workers (in-process or as processes) against the test etcd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from proof.ledger import shell_line
from scheduler.clock import Clock
from scheduler.config import Config, EtcdConfig, WorkerConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord
from workers.worker import Worker


def make_config(endpoints: list[str], prefix: str, worker_id: str = "w1", **worker: Any) -> Config:
    worker.setdefault("lease_ttl", 3)
    worker.setdefault("lease_margin", 0.5)
    worker.setdefault("kill_grace", 1.0)
    worker.setdefault("drain_grace", 10.0)
    worker.setdefault("handoff_delay", 0.2)
    worker.setdefault("listen", "127.0.0.1:0")  # a free port: many workers on one host
    # jobs write into the tests' (root-only) temporary directories: as the worker's user
    worker.setdefault("default_user", "")
    return Config(
        etcd=EtcdConfig(endpoints=endpoints, prefix=prefix),
        worker=WorkerConfig(id=worker_id, **worker),
    )


def ledger_job(
    name: str,
    ledger: Path,
    *,
    schedule: str = "* * * * * *",
    body: str = "",
    beats: float = 0,
    pre: str = "",
    **kw: Any,
) -> JobSpec:
    """A job that appends a ledger line (:mod:`proof.ledger`) at start, ``beat`` lines every 0.1 s for
    ``beats`` seconds (proof it is alive), runs ``body``, then appends ``end``."""
    start = f"{shell_line('start')} >> {shlex.quote(str(ledger))}"
    beat = f"{shell_line('beat')} >> {shlex.quote(str(ledger))}"
    end = f"{shell_line('end')} >> {shlex.quote(str(ledger))}"
    loop = (
        f"i=0; while [ $i -lt {int(beats * 10)} ]; do {beat}; sleep 0.1; i=$((i+1)); done; "
        if beats
        else ""
    )
    script = f"{start}; {pre + '; ' if pre else ''}{loop}{body + '; ' if body else ''}{end}"
    return JobSpec(name=name, schedule=schedule, shell=script, **kw)


async def put_jobs(client: EtcdClient, ks: Keyspace, *jobs: JobSpec) -> None:
    for job in jobs:
        await client.put(ks.job(job.name), job.to_json())


async def runs_of(client: EtcdClient, ks: Keyspace, job: str) -> list[RunRecord]:
    kvs, _ = await client.get_prefix(ks.job_runs(job))
    return [RunRecord.from_json(kv.value) for kv in kvs]


@contextlib.asynccontextmanager
async def workers(
    configs: list[Config], clocks: list[Clock] | None = None
) -> AsyncIterator[list[Worker]]:
    ws = [Worker(c, clock=(clocks[i] if clocks else None)) for i, c in enumerate(configs)]
    try:
        await asyncio.gather(*(w.start() for w in ws))
        yield ws
    finally:
        await asyncio.gather(*(w.stop(grace=5) for w in ws), return_exceptions=True)


class WorkerProcess:
    """``etcron worker`` as a real process (for SIGKILL / SIGSTOP / SIGTERM tests).

    ``netns``: run it under ``ip netns exec NAME`` (which execs Python, so :attr:`pid`
    is the worker's own pid).
    """

    def __init__(self, config: Config, log: Path, *, netns: str | None = None) -> None:
        self.config = config
        self.log = log
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["ETCRON_WORKER_CONFIG_JSON"] = self.config.model_dump_json()
        code = (
            "import os, sys; from scheduler.config import Config; from workers.daemon import main; "
            "sys.exit(main(Config.model_validate_json(os.environ['ETCRON_WORKER_CONFIG_JSON'])))"
        )
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-c", code], stdout=out, stderr=out, env=env
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def registration(value: bytes) -> dict[str, Any]:
    return dict(json.loads(value))

"""Helpers to run etcron workers (in-process or as processes) against the test etcd."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.clock import Clock
from scheduler.config import Config, EtcdConfig, WorkerConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord
from workers.worker import Worker

LEDGER_LINE = 'echo "$ETCRON_JOB $ETCRON_TICK $ETCRON_RUN_ID $ETCRON_FENCING_TOKEN $ETCRON_WORKER'


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
    """A job that appends a ledger line at start, ``beat`` lines every 0.1 s for
    ``beats`` seconds (proof it is alive), runs ``body``, then appends ``end``."""
    start = f'{LEDGER_LINE} start $(date +%s.%N)" >> {ledger}'
    beat = f'{LEDGER_LINE} beat $(date +%s.%N)" >> {ledger}'
    end = f'{LEDGER_LINE} end $(date +%s.%N)" >> {ledger}'
    loop = (
        f"i=0; while [ $i -lt {int(beats * 10)} ]; do {beat}; sleep 0.1; i=$((i+1)); done; "
        if beats
        else ""
    )
    script = f"{start}; {pre + '; ' if pre else ''}{loop}{body + '; ' if body else ''}{end}"
    return JobSpec(name=name, schedule=schedule, shell=script, **kw)


@dataclass
class Entry:
    job: str
    tick: str
    run_id: str
    token: int
    worker: str
    kind: str
    at: float


def read_ledger(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 7:
            out.append(
                Entry(
                    parts[0], parts[1], parts[2], int(parts[3]), parts[4], parts[5], float(parts[6])
                )
            )
    return out


def starts_by_tick(entries: list[Entry]) -> dict[tuple[str, str], list[Entry]]:
    out: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind == "start":
            out[(e.job, e.tick)].append(e)
    return out


def overlaps(entries: list[Entry]) -> list[tuple[str, str]]:
    """Pairs of runs of the same job that were provably alive at the same time.

    A run's span is [start, its last line (beat or end)]: a killed run wrote
    nothing after it died, and every line proves it was alive when written.
    """
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for e in entries:
        span = spans[e.job].setdefault(e.run_id, [e.at, e.at])
        span[0] = min(span[0], e.at)
        span[1] = max(span[1], e.at)
    bad = []
    for _job, runs in spans.items():
        ordered = sorted(runs.items(), key=lambda kv: kv[1][0])
        for (ra, a), (rb, b) in itertools.pairwise(ordered):
            if b[0] < a[1]:
                bad.append((ra, rb))
    return bad


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

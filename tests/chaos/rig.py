"""The chaos rig: a real 3-member etcd cluster on loopback and worker *processes*.

Everything blocking (starting or stopping etcd members) runs in a thread, so the
event loop that serves the TCP proxies keeps forwarding while the rig works.
Only 127.0.0.1 is used, unless the rig is given a :class:`~tests.chaos.netns.Lab`
(addresses in 198.18.0.0/15 on a bridge of its own, nothing outside).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.etcd_process import EtcdCluster
from proof import ledger as checker
from scheduler.config import EtcdConfig, MasterConfig
from scheduler.etcd.client import EtcdClient, EtcdError
from scheduler.keyspace import Keyspace
from scheduler.master.housekeeping import Housekeeper
from scheduler.model import JobSpec
from scheduler.runs import RunRecord
from tests.chaos.netns import Lab
from tests.support import wait_for
from tests.support.cluster import WorkerProcess, make_config
from tests.support.proxy import ProxyGroup

LEDGER_PY = Path(__file__).with_name("ledger.py")
PREFIX = "/chaos/cron"


class Rig:
    """``members`` etcd members, ``workers`` worker processes (``w0``, ``w1``, ...).

    ``proxied``: indexes of workers whose etcd endpoints go through their own
    :class:`TcpProxy` per member (``self.proxies[i]``), so they can be cut off.
    ``worker_opts``: extra ``WorkerConfig`` fields per worker index.
    ``net``: run every member and worker in its own network namespace of this
    :class:`~tests.chaos.netns.Lab` (worker ``i`` lists member ``i`` first).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        members: int = 3,
        workers: int = 3,
        lease_ttl: int = 4,
        lease_margin: float = 1.0,
        handoff: float = 0.2,
        drain_grace: float = 5.0,
        proxied: tuple[int, ...] = (),
        worker_opts: dict[int, dict[str, Any]] | None = None,
        initial: int | None = None,
        net: Lab | None = None,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ledger = self.dir / "ledger"
        self.net = net
        if net is None:
            self.cluster = EtcdCluster(self.dir / "etcd", members)
        else:
            self.cluster = EtcdCluster(
                self.dir / "etcd", members, hosts=net.member_addrs, netns=net.member_ns
            )
        self.ks = Keyspace(PREFIX)
        self.n_workers = workers
        self.initial = workers if initial is None else initial
        self.lease_ttl = lease_ttl
        self.opts: dict[str, Any] = {
            "lease_ttl": lease_ttl,
            "lease_margin": lease_margin,
            "handoff_delay": handoff,
            "drain_grace": drain_grace,
            "kill_grace": 1.0,
        }
        self.worker_opts = worker_opts or {}
        self.proxied = proxied
        self.proxies: dict[int, ProxyGroup] = {}
        self.workers: list[WorkerProcess] = []
        self.client: EtcdClient | None = None
        self.faults: list[checker.Fault] = []
        self.daemon_pids = self.dir / "daemon-pids"

    # lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)
        cfg = EtcdConfig(endpoints=self.cluster.endpoints, prefix=PREFIX, request_timeout=2.0)
        self.client = await EtcdClient.connect(cfg)
        for i in self.proxied:
            group = ProxyGroup(self.cluster.endpoints)
            await group.start()
            self.proxies[i] = group
        self.workers = [self._worker(i) for i in range(self.n_workers)]
        await self.start_workers(*range(self.initial))

    async def start_workers(self, *indexes: int) -> None:
        for i in indexes:
            self.workers[i].start()
        ids = [f"w{i}" for i in indexes]

        async def registered() -> bool:
            regs = await self.registrations()
            return all(w in regs for w in ids)

        await wait_for(registered, timeout=30, message=f"{ids} registered")

    def _worker(self, i: int) -> WorkerProcess:
        endpoints = self.proxies[i].addresses if i in self.proxies else self.cluster.endpoints
        opts = self.opts | self.worker_opts.get(i, {})
        if self.net is not None:  # spread the workers' first endpoints over the members
            k = i % len(endpoints)
            endpoints = endpoints[k:] + endpoints[:k]
        config = make_config(endpoints, PREFIX, f"w{i}", **opts)
        netns = self.net.worker_ns[i] if self.net is not None else None
        return WorkerProcess(config, self.dir / f"w{i}.log", netns=netns)

    async def stop(self) -> None:
        for w in self.workers:
            w.signal(signal.SIGCONT)
            w.signal(signal.SIGTERM)
        for w in self.workers:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(w.wait, 20)
            w.close()
        for group in self.proxies.values():
            await group.stop()
        if self.client is not None:
            await self.client.close()
        await asyncio.to_thread(self.cluster.stop)
        self.kill_daemons()

    def kill_daemons(self) -> None:
        """Processes that jobs forked into their own session (recorded by pid)."""
        if not self.daemon_pids.exists():
            return
        for word in self.daemon_pids.read_text().split():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(word), signal.SIGKILL)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # jobs ---------------------------------------------------------------------

    def ledger_cmd(self, kind: str) -> str:
        return f"{shlex.quote(sys.executable)} -I -S {LEDGER_PY} {self.ledger} {kind}"

    def job(
        self,
        name: str,
        *,
        run: float = 0.05,
        beats: float = 0,
        schedule: str = "* * * * * *",
        **kw: Any,
    ) -> JobSpec:
        """A forbid job that writes ``start``, sleeps ``run`` (or beats for ``beats``
        seconds), then writes ``end``; a rejected write stops it."""
        body = self.ledger_cmd(f"beat {beats}") if beats else f"sleep {run}"
        shell = f"{self.ledger_cmd('start')} && {body} && {self.ledger_cmd('end')}"
        return JobSpec(name=name, schedule=schedule, shell=shell, **kw)

    @property
    def etcd(self) -> EtcdClient:
        assert self.client is not None
        return self.client

    async def put_jobs(self, *jobs: JobSpec) -> int:
        rev = 0
        for job in jobs:
            rev = await self.etcd.put(self.ks.job(job.name), job.to_json())
        return rev

    def lines(self) -> list[checker.Line]:
        return checker.read(self.ledger)

    async def warm(self, *jobs: str, timeout: float = 30) -> float:
        """Wait until every job has started twice; the time the checked window opens."""

        def ready() -> bool:
            seen = [e.job for e in self.lines() if e.is_start]
            return all(seen.count(j) >= 2 for j in jobs)

        await wait_for(ready, timeout=timeout, interval=0.1, message=f"{jobs} running")
        return time.time()

    # faults -------------------------------------------------------------------

    def fault(self, label: str, settle: float = 0.0) -> checker.Fault:
        f = checker.Fault(label, time.time(), settle=settle)
        self.faults.append(f)
        return f

    @staticmethod
    def heal(f: checker.Fault) -> None:
        f.end = time.time()

    # etcd views ---------------------------------------------------------------

    async def registrations(self) -> dict[str, dict[str, Any]]:
        try:
            kvs, _ = await self.etcd.get_prefix(self.ks.workers)
        except EtcdError:
            return {}
        return {self.ks.parse_worker(kv.key): json.loads(kv.value) for kv in kvs}

    async def holder(self, job: str) -> tuple[str, str] | None:
        """(worker id, run id) of the run holding ``job``'s lock, if any."""
        with contextlib.suppress(EtcdError):
            kv, _ = await self.etcd.get(self.ks.lock(job))
            if kv is not None:
                v = json.loads(kv.value)
                return str(v["worker"]), str(v["run_id"])
        return None

    async def records(self, job: str) -> dict[str, RunRecord]:
        kvs, _ = await self.etcd.get_prefix(self.ks.job_runs(job))
        out = {}
        for kv in kvs:
            with contextlib.suppress(ValueError):
                rec = RunRecord.from_json(kv.value)
                out[rec.run_id] = rec
        return out

    async def sweep(self) -> int:
        """One housekeeping sweep, as the leader master would run it; runs marked lost."""
        keep = MasterConfig(keep_succeeded=10**6, keep_failed=10**6)
        hk = Housekeeper(self.etcd, self.ks, keep, identity="chaos-rig")
        return (await hk.sweep()).marked_lost

    def worker(self, wid: str) -> WorkerProcess:
        return self.workers[int(wid[1:])]

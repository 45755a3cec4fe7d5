"""The did-not-run detector's sweep at 10,000 jobs: its cost when nothing is owed,
and after an hour in which no tick ran (the per-sweep bound at work).

    python -m bench.didnotrun_sweep [--jobs 10000]

Starts its own etcd (stopped at the end); an injected clock stands for the hour.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.etcd_process import EtcdCluster
from scheduler.clock import Clock
from scheduler.config import Config, EtcdConfig
from scheduler.etcd.client import EtcdClient, op_put
from scheduler.keyspace import Keyspace
from scheduler.master.didnotrun import DidNotRun
from scheduler.model import JobSpec


@dataclass
class AheadClock(Clock):
    ahead: float = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


async def bench(endpoints: list[str], jobs: int) -> None:
    client = await EtcdClient.connect(EtcdConfig(endpoints=endpoints))
    ks = Keyspace("/bench/cron")
    for i in range(0, jobs, 100):
        ops = [
            op_put(
                ks.job(f"j{k}"),
                JobSpec(name=f"j{k}", schedule="*/5 * * * *", shell="true").to_json(),
            )
            for k in range(i, min(jobs, i + 100))
        ]
        await client.txn([], ops)
    leader = asyncio.Event()
    leader.set()
    clock = AheadClock()
    cfg = Config.model_validate({"notify": {"did_not_run_grace": 1}})
    d = DidNotRun(client, ks, cfg, identity="bench", is_leader=leader, clock=clock)
    for label, ahead in (
        ("first sight", 0.0),
        ("nothing owed", 0.0),
        ("1 h silent", 3600.0),
        ("next", 3600.0),
    ):
        clock.ahead = ahead
        started = time.perf_counter()
        n = await d.sweep()
        print(f"{jobs} jobs, {label}: {time.perf_counter() - started:.2f} s, {n} records")
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = EtcdCluster(Path(tmp), 1)
        cluster.start()
        try:
            asyncio.run(bench(cluster.endpoints, args.jobs))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()

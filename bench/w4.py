"""W4: the etcd ceiling as seen from Python on this machine.

Against one fresh etcd: puts/s and claim cycles/s (``scheduler.etcd.claim_txn.claim``
with a new tick each time, then ``release``: exactly the two transactions a run
costs), with 1 client and with 3 concurrent asyncio clients in one process, each
client sending one request at a time. Also the CPU of this Python process and of
etcd per operation, to show which side is the bottleneck.

    python -m bench.w4 [--seconds 10] [--out bench/results/w4.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    KS,
    cleanup,
    connect,
    etcd_server,
    host_info,
    proc_times,
    workdir,
    write_json,
)
from scheduler.etcd.claim_txn import ClaimRequest, Outcome, TickFence, claim, release
from scheduler.etcd.client import EtcdClient
from scheduler.runs import LockValue, RunRecord, RunStatus, from_ms, new_run_id

Step = Callable[[], Awaitable[None]]


def put_step(client: EtcdClient, cid: int) -> Step:
    value = b"x" * 200
    i = 0

    async def step() -> None:
        nonlocal i
        i += 1
        await client.put(f"/bench/put/{cid}/{i % 1000:04d}", value)

    return step


async def claim_step(client: EtcdClient, cid: int) -> Step:
    lease, _ = await client.grant(60)
    job = f"bench-{cid}-{os.urandom(2).hex()}"
    tick = int(time.time()) * 1000

    async def step() -> None:
        nonlocal tick
        tick += 1000
        when = from_ms(tick)
        run_id = new_run_id(when)
        rec = RunRecord(
            job=job,
            run_id=run_id,
            tick=when,
            status=RunStatus.RUNNING,
            worker=f"w{cid}",
            lease=lease,
            start=datetime.now(UTC),
        )
        skipped = rec.model_copy(update={"status": RunStatus.SKIPPED, "start": None})
        lock = LockValue(worker=f"w{cid}", run_id=run_id, tick=when, lease=lease).to_json()
        req = ClaimRequest.tick(
            TickFence(KS.tick(job), tick),
            lock_key=KS.lock(job),
            lock_value=lock,
            lease=lease,
            run_id=run_id,
            record_key=KS.run(job, run_id),
            record_value=rec.to_json(),
            skip_value=skipped.to_json(),
        )
        c = await claim(client, req)
        if c.outcome is not Outcome.WON:
            raise RuntimeError(f"claim of a fresh tick not won: {c}")
        final = rec.model_copy(
            update={
                "status": RunStatus.SUCCEEDED,
                "end": datetime.now(UTC),
                "exit_code": 0,
                "fencing_token": c.token,
            }
        )
        if not await release(client, KS.lock(job), c.token, KS.run(job, run_id), final.to_json()):
            raise RuntimeError("release failed")

    return step


async def measure(
    endpoint: str, etcd_pid: int | None, kind: str, clients: int, seconds: float
) -> dict[str, Any]:
    conns = [await connect(endpoint) for _ in range(clients)]
    try:
        if kind == "put":
            steps = [put_step(c, i) for i, c in enumerate(conns)]
        else:
            steps = [await claim_step(c, i) for i, c in enumerate(conns)]
        for s in steps:  # warm the channels
            await s()
        counts = [0] * clients
        stop = time.monotonic() + seconds

        async def loop(i: int) -> None:
            while time.monotonic() < stop:
                await steps[i]()
                counts[i] += 1

        me0, etcd0 = proc_times(os.getpid()), proc_times(etcd_pid) if etcd_pid else None
        rev0 = await conns[0].revision()
        t0 = time.monotonic()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        elapsed = time.monotonic() - t0
        rev1 = await conns[0].revision()
        me1, etcd1 = proc_times(os.getpid()), proc_times(etcd_pid) if etcd_pid else None
    finally:
        for c in conns:
            await c.close()
    ops = sum(counts)
    py_cpu = (me1.own - me0.own) if me0 and me1 else 0.0
    etcd_cpu = (etcd1.own - etcd0.own) if etcd0 and etcd1 else 0.0
    unit = "put" if kind == "put" else "claim+release"
    return {
        "kind": unit,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "ops": ops,
        "ops_per_s": round(ops / elapsed, 1),
        "txns_per_s": round((rev1 - rev0 - 1) / elapsed, 1),
        "python_cpu_ms_per_op": round(py_cpu * 1000 / ops, 3) if ops else None,
        "etcd_cpu_ms_per_op": round(etcd_cpu * 1000 / ops, 3) if ops else None,
        "python_cores_busy": round(py_cpu / elapsed, 2),
        "etcd_cores_busy": round(etcd_cpu / elapsed, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = workdir("w4")
    results = []
    with etcd_server(base) as etcd:
        for kind in ("put", "claim"):
            for clients in (1, 3):
                r = await measure(etcd.endpoint, etcd.pid, kind, clients, args.seconds)
                print(
                    f"W4: {r['kind']:>13} x{clients}: {r['ops_per_s']:>8}/s "
                    f"(etcd txns/s {r['txns_per_s']}, python {r['python_cores_busy']} cores, "
                    f"etcd {r['etcd_cores_busy']} cores)",
                    flush=True,
                )
                results.append(r)
    cleanup(base, keep=False)
    return {"workload": "W4", "host": host_info(), "results": results}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.w4", description="W4: etcd ceiling")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    out = asyncio.run(run(args))
    write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

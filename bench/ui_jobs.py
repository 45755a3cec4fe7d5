"""The dashboard's jobs page with 10,000 jobs: server-side time of ``GET /ui/jobs?page=N``.

A fresh single-member etcd; ``--jobs`` jobs (labels ``team``, ``tier``) and
``--runs`` run records for each (so every visible row has a last run and
recent outcomes). The master's app runs in this process (the same app
``etcron master`` serves, called through httpx's ASGI transport: no network,
so the time is the server's: the etcd reads, the paging, the rendering).
Signed in once; then ``--requests`` requests of random pages (after one cold
request, which parses every spec), and the same for a search and for each
filter. Prints median and p99 (ms) per kind, and writes the JSON.

    python -m bench.ui_jobs [--jobs 10000] [--runs 3] [--requests 50] \\
        [--out bench/results/ui_jobs.json]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import KS, cleanup, connect, etcd_server, host_info, percentile, workdir
from bench.common import write_json as save
from scheduler.etcd.client import EtcdClient, op_put
from scheduler.master.api import create_app
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from scheduler.store import JobStore

TOKEN = "bench-ui-token"
STATUSES = [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED]


async def load(client: EtcdClient, jobs: int, runs: int) -> None:
    ops: list[Any] = []
    base = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(jobs):
        name = f"job-{i:05d}"
        spec = JobSpec(
            name=name,
            schedule=f"{i % 60} {i % 24} * * *",
            shell="true",
            labels={"team": f"t{i % 20}", "tier": str(i % 3)},
        )
        ops.append(op_put(KS.job(name), spec.to_json()))
        for k in range(runs):
            tick = base + timedelta(hours=k)
            start = tick + timedelta(milliseconds=5)
            rec = RunRecord(
                job=name,
                run_id=f"{tick.strftime('%Y%m%dT%H%M%S')}Z-{i:06x}",
                tick=tick,
                status=STATUSES[(i + k) % len(STATUSES)],
                worker="w1",
                start=start,
                end=start + timedelta(seconds=1 + (i % 7)),
                exit_code=0,
            )
            ops.append(op_put(KS.run(name, rec.run_id), rec.to_json()))
        if len(ops) >= 100:
            await client.txn([], ops)
            ops = []
    if ops:
        await client.txn([], ops)


async def timed(c: httpx.AsyncClient, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t0 = time.perf_counter()
        r = await c.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 99) or 0.0, 1),
        "max_ms": round(max(ms), 1),
    }


async def bench(endpoint: str, jobs: int, runs: int, requests: int) -> dict[str, Any]:
    client = await connect(endpoint)
    try:
        t0 = time.perf_counter()
        await load(client, jobs, runs)
        loaded = time.perf_counter() - t0
        app = create_app(JobStore(client, KS), token=TOKEN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://master") as c:
            r = await c.post("/ui/login", data={"token": TOKEN})
            assert r.status_code == 303, r.status_code
            pages = -(-jobs // 50)
            rng = random.Random(1)
            cold = await timed(c, ["/ui/jobs?page=1"])
            kinds = {
                "page": [f"/ui/jobs?page={rng.randint(1, pages)}" for _ in range(requests)],
                "search name": [f"/ui/jobs?q=job-0{rng.randint(0, 9)}" for _ in range(requests)],
                "search label": [
                    f"/ui/jobs?q=team%3Dt{rng.randint(0, 19)}&page=2" for _ in range(requests)
                ],
                "filter running": ["/ui/jobs?filter=running"] * requests,
                "filter no-worker": ["/ui/jobs?filter=no-worker"] * requests,
                "filter failing": ["/ui/jobs?filter=failing"] * max(5, requests // 10),
            }
            results = {"cold first page": summary(cold)}
            for kind, urls in kinds.items():
                results[kind] = summary(await timed(c, urls))
    finally:
        await client.close()
    return {"jobs": jobs, "runs_per_job": runs, "load_seconds": round(loaded, 1), **results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("bench/results/ui_jobs.json"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    base = workdir("ui")
    try:
        with etcd_server(base) as member:
            result = asyncio.run(bench(member.endpoint, args.jobs, args.runs, args.requests))
    finally:
        cleanup(base, args.keep)
    result["host"] = host_info()
    save(args.out, result)
    print(f"{args.jobs} jobs, {args.runs} runs each (loaded in {result['load_seconds']} s)")
    for kind, s in result.items():
        if isinstance(s, dict) and "median_ms" in s:
            print(
                f"  {kind:18} n={s['n']:3}  median {s['median_ms']:7.1f} ms  "
                f"p99 {s['p99_ms']:7.1f} ms  max {s['max_ms']:7.1f} ms"
            )


if __name__ == "__main__":
    main()

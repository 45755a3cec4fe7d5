"""W1: fire lag and throughput.

For each N: a fresh etcd, N jobs firing every second (each appends one ledger
line), ``--workers`` worker processes (lease TTL 6 s, default hand-off). After
``--warmup`` seconds, measure for ``--duration`` seconds: fires, duplicates,
misses, start lag, CPU per run (workers+guards, etcd, the job shells) and etcd
writes per run.

    python -m bench.w1 --jobs 10,100,300 --workers 3 --duration 30 --warmup 5 \\
        [--out bench/results/w1.json] [--keep] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.analyze import analyze, table
from bench.common import (
    build_body,
    cleanup,
    connect,
    etcd_server,
    host_info,
    job_names,
    log_counts,
    parse_set,
    put_jobs,
    registered,
    sample_cpu,
    start_workers,
    stop_workers,
    tick_job,
    wait_ready,
    workdir,
    worker_stats,
    write_json,
)

SETTLE = 2.0
"""Seconds after the window before stopping, so late starts of window ticks are seen."""


async def run_one(
    n: int,
    *,
    workers: int,
    duration: float,
    warmup: float,
    keep: bool,
    profile: bool,
    body: str,
    worker_cfg: dict[str, Any],
) -> dict[str, Any]:
    base = workdir(f"w1-n{n}")
    ledger = base / "ledger"
    ledger.touch()
    if worker_cfg.get("default_user"):  # --set default_user='"nobody"': jobs append as that user
        base.chmod(0o755)
        ledger.chmod(0o666)
    names = job_names(n)
    program = build_body(base, body)
    meta: dict[str, Any] = {"n": n, "workers": workers, "job_names": names, "dir": str(base)}
    with etcd_server(base) as etcd:
        client = await connect(etcd.endpoint)
        ws = []
        try:
            await put_jobs(client, [tick_job(name, ledger, program) for name in names])
            ws = start_workers(workers, etcd.endpoint, base, profile_first=profile, **worker_cfg)
            meta["startup_s"] = round(await wait_ready(client, ws), 2)
            await asyncio.sleep(warmup)
            meta["t0"] = time.time()
            meta["cpu_before"] = sample_cpu(ws, etcd.pid).as_dict()
            meta["rev_before"] = await client.revision()
            reg_before = await registered(client)
            await asyncio.sleep(duration - (time.time() - meta["t0"]))
            meta["t1"] = time.time()
            meta["cpu_after"] = sample_cpu(ws, etcd.pid).as_dict()
            meta["rev_after"] = await client.revision()
            reg_after = await registered(client)
            meta["registration_writes"] = sum(
                v - reg_before.get(k, 0) for k, v in reg_after.items()
            )
            await asyncio.sleep(SETTLE)
        finally:
            meta["exit_codes"] = stop_workers(ws)
            await client.close()
    write_json(base / "meta.json", meta)
    result = {"n": n, **analyze(ledger, meta)}
    result["body"] = "c" if program else "sh"
    result["startup_s"] = meta["startup_s"]
    result["worker_exit_codes"] = meta["exit_codes"]
    result["worker_log_warnings"] = log_counts(ws)
    result["worker_stats"] = worker_stats(ws)
    if keep or profile:
        result["dir"] = str(base)
    else:
        cleanup(base, keep=False)
    return result


def overloaded(r: dict[str, Any]) -> bool:
    p99 = r["lag_ms"]["p99"]
    return r["misses"] > 0.05 * r["fires_expected"] or p99 is None or p99 > 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for n in args.jobs:
        print(f"W1: N={n} ...", flush=True)
        r = await run_one(
            n,
            workers=args.workers,
            duration=args.duration,
            warmup=args.warmup,
            keep=args.keep,
            profile=args.profile,
            body=args.body,
            worker_cfg=dict(args.worker_set),
        )
        results.append(r)
        print(table([r]).splitlines()[1], flush=True)
        if overloaded(r):
            print(f"W1: N={n} is overloaded on this machine; not going further", flush=True)
            break
    return {
        "workload": "W1",
        "host": host_info(),
        "params": {
            "jobs": args.jobs,
            "workers": args.workers,
            "duration": args.duration,
            "warmup": args.warmup,
            "worker_config": dict(args.worker_set),
            "body": args.body,
        },
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.w1", description="W1: fire lag and throughput"
    )
    ap.add_argument("--jobs", default="10,100,300", help="comma-separated job counts N")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the ledger, logs and etcd data")
    ap.add_argument(
        "--body",
        choices=("c", "sh"),
        default="c",
        help="job body: c = a compiled ledger writer (bench/body), sh = /bin/sh + printf + date",
    )
    ap.add_argument("--profile", action="store_true", help="run worker w1 under cProfile")
    ap.add_argument(
        "--set",
        dest="worker_set",
        action="append",
        type=parse_set,
        default=[],
        metavar="FIELD=JSON",
        help="override a worker config field, e.g. --set capacity=64 (repeatable)",
    )
    args = ap.parse_args(argv)
    args.jobs = [int(x) for x in args.jobs.split(",") if x]
    out = asyncio.run(run(args))
    write_json(args.out, out)
    print(json.dumps(out["results"], indent=2))
    print(table(out["results"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

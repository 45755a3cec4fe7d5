"""W2: failover.

Phase 1 (crash): W1 at N jobs (default 100) with 3 worker processes for 20 s;
then SIGKILL the worker that ran the most runs so far and measure 15 s more:
ticks missed after the kill (ticks T >= the kill time; the tick in progress at
the kill is reported apart), the longest gap between consecutive runs of a job
(max over jobs), duplicates, and how long the dead worker stayed registered.

Phase 2 (pause): a replacement worker is started (3 live workers again), the
jobs are switched to runs that log a start line, sleep 0.3 s and log an end
line; after a few seconds another worker is SIGSTOPped for 2 x lease TTL and
then SIGCONTed. Duplicates and overlapping runs must both be 0; misses and the
run records (skipped / lost) are reported for information.

    python -m bench.w2 [--jobs 100] [--out bench/results/w2.json] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.analyze import fires, max_gap
from bench.common import (
    KS,
    WorkerProc,
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
    sleep_job,
    start_workers,
    stop_workers,
    tick_job,
    wait_ready,
    workdir,
    write_json,
)
from proof.ledger import overlaps, unfinished
from proof.ledger import read as read_ledger
from scheduler.etcd.client import EtcdClient
from scheduler.runs import RunRecord

LEASE_TTL = 6
SETTLE = 2.0


async def watch_gone(
    client: EtcdClient, worker_id: str, since: float, limit: float
) -> float | None:
    """Seconds from ``since`` until ``worker_id`` is no longer registered (None: still there)."""
    while time.time() - since < limit:
        if worker_id not in await registered(client):
            return round(time.time() - since, 2)
        await asyncio.sleep(0.05)
    return None


async def run_records(client: EtcdClient, t0: float, t1: float) -> dict[str, int]:
    """Statuses of the run records whose tick is in [t0, t1)."""
    kvs, _ = await client.get_prefix(KS.runs)
    out: Counter[str] = Counter()
    for kv in kvs:
        try:
            rec = RunRecord.from_json(kv.value)
        except ValueError:
            out["unreadable"] += 1
            continue
        if t0 <= rec.tick.timestamp() < t1:
            out[str(rec.status)] += 1
    return dict(sorted(out.items()))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = workdir("w2")
    ledger1, ledger2 = base / "ledger1", base / "ledger2"
    ledger1.touch()
    ledger2.touch()
    names = job_names(args.jobs)
    out: dict[str, Any] = {"workload": "W2", "host": host_info(), "dir": str(base)}
    cfg = {"lease_ttl": LEASE_TTL, **dict(args.worker_set)}
    out["params"] = {"jobs": args.jobs, "workers": 3, "worker_config": cfg}
    ws: list[WorkerProc] = []
    with etcd_server(base) as etcd:
        client = await connect(etcd.endpoint)
        try:
            program = build_body(base, args.body)
            out["params"]["body"] = "c" if program else "sh"
            await put_jobs(client, [tick_job(n, ledger1, program) for n in names])
            ws = start_workers(3, etcd.endpoint, base, **cfg)
            await wait_ready(client, ws)
            await asyncio.sleep(args.warmup)

            # phase 1: crash -------------------------------------------------
            t_start = time.time()
            await asyncio.sleep(args.before)
            so_far = Counter(x.worker for x in read_ledger(ledger1) if x.tick_ms >= t_start * 1000)
            victim = next(w for w in ws if w.id == max(so_far, key=lambda k: so_far[k]))
            t_kill = time.time()
            victim.signal(signal.SIGKILL)
            print(f"W2: SIGKILL {victim.id} (ran {so_far[victim.id]} runs) at {t_kill:.3f}")
            gone = asyncio.create_task(watch_gone(client, victim.id, t_kill, args.after))
            await asyncio.sleep(args.after)
            t_end = time.time()
            await asyncio.sleep(SETTLE)
            victim.wait(5)
            victim.kill_guard()
            lines = read_ledger(ledger1)
            in_progress = math.floor(t_kill)
            after = fires(lines, names, math.ceil(t_kill), t_end)
            at_kill = fires(lines, names, in_progress, in_progress + 0.5)
            whole = fires(lines, names, t_start, t_end)
            out["crash"] = {
                "victim": victim.id,
                "victim_runs_before_kill": so_far[victim.id],
                "runs_before_kill": dict(sorted(so_far.items())),
                "deregistered_after_s": await gone,
                "after_kill": {
                    "window_s": after["window_s"],
                    "fires_expected": after["fires_expected"],
                    "misses": after["misses"],
                    "duplicates": after["duplicates"],
                    "lag_ms": after["lag_ms"],
                    "runs_per_worker": after["runs_per_worker"],
                },
                "tick_in_progress_at_kill": {
                    "misses": at_kill["misses"],
                    "duplicates": at_kill["duplicates"],
                },
                "duplicates_whole_phase": whole["duplicates"],
                "misses_whole_phase": whole["misses"],
                "max_gap_between_runs_s": max_gap(lines, t_start, t_end),
                "max_gap_before_kill_s": max_gap(lines, t_start, t_kill),
            }

            # phase 2: pause -------------------------------------------------
            spare = WorkerProc("w4", etcd.endpoint, base / "w4.log", **cfg)
            spare.start()
            ws.append(spare)
            await wait_ready(client, [spare])
            await put_jobs(client, [sleep_job(n, ledger2) for n in names])
            await asyncio.sleep(3)
            p_start = time.time()
            await asyncio.sleep(3)
            paused = next(w for w in ws if w.alive and w is not spare)
            t_stop = time.time()
            paused.signal(signal.SIGSTOP)
            print(f"W2: SIGSTOP {paused.id} for {2 * cfg['lease_ttl']} s at {t_stop:.3f}")
            await asyncio.sleep(2 * cfg["lease_ttl"])
            paused.signal(signal.SIGCONT)
            t_cont = time.time()
            await asyncio.sleep(args.after_pause)
            p_end = time.time()
            await asyncio.sleep(SETTLE)
            lines2 = read_ledger(ledger2)
            lo, hi = math.ceil(p_start) * 1000, math.ceil(p_end) * 1000
            window = [x for x in lines2 if lo <= x.tick_ms < hi]
            pause = fires(lines2, names, p_start, p_end)
            during = fires(lines2, names, t_stop, t_cont)
            out["pause"] = {
                "paused": paused.id,
                "paused_for_s": round(t_cont - t_stop, 2),
                "window_s": pause["window_s"],
                "fires_expected": pause["fires_expected"],
                "fires_seen": pause["fires_seen"],
                "duplicates": pause["duplicates"],
                "overlaps": len(overlaps(window)),
                "runs_without_end_line": unfinished(window),
                "misses": pause["misses"],
                "misses_while_paused": during["misses"],
                "lag_ms": pause["lag_ms"],
                "runs_per_worker": pause["runs_per_worker"],
                "run_records": await run_records(client, p_start, p_end),
            }
        finally:
            out["worker_exit_codes"] = stop_workers(ws)
            await client.close()
    out["worker_log_warnings"] = log_counts(ws)
    cleanup(base, keep=args.keep)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.w2", description="W2: failover")
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--before", type=float, default=20.0, help="seconds before the SIGKILL")
    ap.add_argument("--after", type=float, default=15.0, help="seconds measured after it")
    ap.add_argument("--after-pause", type=float, default=8.0, help="seconds after SIGCONT")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--body", choices=("c", "sh"), default="c", help="W1 job body (see bench.w1)")
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
    out = asyncio.run(run(args))
    write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

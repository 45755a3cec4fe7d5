"""W1 (and W2) for Celery 5 + RedBeat: one beat, 3 Celery worker processes, N per-second entries.

Run with the peers venv (``bench/.peers-venv``, created by ``bench/peers/setup.sh``):

    bench/.peers-venv/bin/python -m bench.peers.celery_w1 --jobs 10,100 --duration 30 --warmup 5 \\
        [--out bench/results/peers-celery-w1.json]
    bench/.peers-venv/bin/python -m bench.peers.celery_w1 --w2 [--out bench/results/peers-celery-w2.json]

Per N: a private redis (127.0.0.1, free port, no persistence); N RedBeat entries
``j0000..`` with ``rrule("SECONDLY")`` (whole seconds), task ``ledger`` (one
O_APPEND write of ``job tick time pid worker``; the tick is RedBeat's scheduled
occurrence, see ``bench/peers/celery_app.py``); 3 ``celery worker`` processes
(default prefork pool, concurrency = nproc, default prefetch), one ``celery
beat`` with ``TickBeat``. Everything at Celery/RedBeat defaults. Window and
figures as etcron's W1 (``bench.analyze``): the CPU "scheduler" column is beat
+ the workers (with their pool children), "broker" is redis; no job processes.

``--w2``: N=100, after warm-up 20 s, SIGKILL the worker (main process and its
pool children: a lost host) that ran the most runs; 15 s more. Then SIGKILL
beat and measure 10 s (single point of failure); then start a new beat at once
and measure 15 s more (RedBeat's lock, held by the dead beat, must expire
first: ``redbeat_lock_timeout``, by default 5 x ``beat_max_loop_interval`` =
25 min).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.peers.common import (
    REPO,
    Redis,
    analyze,
    cleanup,
    descendants,
    host_info,
    meta_for,
    redis_server,
    stop_pid,
    tidy,
    tree_cpu,
    use_body,
    workdir,
    write_json,
)
from bench.table import cpu_ms, field, render, w1_columns

SETTLE = 2.0
CELERY = [sys.executable, "-m", "celery", "-A", "bench.peers.celery_app"]


class Cluster:
    """Beat + 3 workers as processes, with their environment."""

    def __init__(self, base: Path, redis: Redis, ledger: Path, workers: int) -> None:
        self.base = base
        self.env = dict(os.environ)
        self.env.update(PEERS_REDIS_URL=redis.url, PEERS_LEDGER=str(ledger), PYTHONPATH=str(REPO))
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.beats: list[subprocess.Popen[bytes]] = []
        self.n_workers = workers

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.base / log, "ab") as out:
            return subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env, cwd=REPO
            )

    def start_workers(self) -> None:
        for i in range(self.n_workers):
            wid = f"w{i + 1}"
            self.workers[wid] = self._spawn(
                [*CELERY, "worker", "-n", f"{wid}@%h", "--loglevel", "warning"], f"{wid}.log"
            )

    def start_beat(self) -> subprocess.Popen[bytes]:
        k = len(self.beats) + 1
        beat = self._spawn(
            [
                *CELERY,
                "beat",
                "-S",
                "bench.peers.celery_app:TickBeat",
                "--loglevel",
                "warning",
                "--pidfile",
                str(self.base / f"beat{k}.pid"),
                "-s",
                str(self.base / f"beat{k}-schedule"),
            ],
            f"beat{k}.log",
        )
        self.beats.append(beat)
        return beat

    def add_entries(self, names: Sequence[str]) -> None:
        """Create the entries from a fresh process (the app reads its redis URL at import)."""
        code = (
            "import sys; from bench.peers.celery_w1 import add_entries; add_entries(sys.argv[1:])"
        )
        subprocess.run(
            [sys.executable, "-c", code, *names], env=self.env, cwd=REPO, check=True, timeout=120
        )

    def roots(self) -> list[int]:
        return [p.pid for p in [*self.beats, *self.workers.values()] if p.poll() is None]

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for i, b in enumerate(self.beats):
            codes[f"beat{i + 1}"] = stop_pid(b)
        for wid, w in self.workers.items():
            kids = descendants(w.pid) if w.poll() is None else []
            codes[wid] = stop_pid(w, 30)
            for k in kids:  # pool children left behind (a SIGKILLed main)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGKILL)
        return codes


def add_entries(names: Sequence[str]) -> None:
    """N RedBeat entries, every whole second (rrule SECONDLY from a whole second)."""
    from redbeat import RedBeatSchedulerEntry
    from redbeat.schedules import rrule

    from bench.peers.celery_app import app

    start = datetime.fromtimestamp(math.floor(time.time()), UTC)
    for name in names:
        RedBeatSchedulerEntry(
            name, "ledger", rrule("SECONDLY", dtstart=start), kwargs={"job": name}, app=app
        ).save()


def ledger_workers(ledger: Path, since: float) -> Counter[str]:
    out: Counter[str] = Counter()
    with contextlib.suppress(OSError), open(ledger) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and float(parts[2]) >= since:
                out[parts[4]] += 1
    return out


def wait_first_line(ledger: Path, timeout: float = 60.0) -> float:
    t = time.time()
    while ledger.stat().st_size == 0:
        if time.time() - t > timeout:
            raise TimeoutError("no run in the ledger: see the beat and worker logs")
        time.sleep(0.1)
    return time.time() - t


def cpu(cl: Cluster, redis: Redis) -> dict[str, float]:
    return {"workers": tree_cpu(cl.roots()), "etcd": tree_cpu([redis.pid]), "jobs": 0.0}


def run_one(n: int, *, duration: float, warmup: float, keep: bool) -> dict[str, Any]:
    base = workdir(f"peer-celery-n{n}")
    ledger = base / "ledger"
    ledger.touch()
    names = [f"j{i:04d}" for i in range(n)]
    with redis_server(base) as redis:
        cl = Cluster(base, redis, ledger, 3)
        cl.add_entries(names)
        try:
            t = time.time()
            cl.start_workers()
            cl.start_beat()
            wait_first_line(ledger)
            startup = time.time() - t
            time.sleep(warmup)
            t0 = time.time()
            c0, r0 = cpu(cl, redis), redis.commands()
            time.sleep(max(0.0, duration - (time.time() - t0)))
            t1 = time.time()
            c1, r1 = cpu(cl, redis), redis.commands()
            time.sleep(SETTLE)
        finally:
            codes = cl.stop()
    result = tidy(analyze(ledger, meta_for(names, t0, t1, c0, c1)))
    result = {"n": n, **result}
    result["redis_commands_per_run"] = round((r1 - r0) / max(1, result["fires_seen"]), 2)
    result["startup_s"] = round(startup, 2)
    result["exit_codes"] = codes
    if keep:
        result["dir"] = str(base)
    cleanup(base, keep)
    return result


def w2(*, n: int, warmup: float, keep: bool) -> dict[str, Any]:
    base = workdir("peer-celery-w2")
    ledger = base / "ledger"
    ledger.touch()
    names = [f"j{i:04d}" for i in range(n)]
    out: dict[str, Any] = {"n": n}
    with redis_server(base) as redis:
        cl = Cluster(base, redis, ledger, 3)
        cl.add_entries(names)
        try:
            cl.start_workers()
            beat = cl.start_beat()
            wait_first_line(ledger)
            time.sleep(warmup)
            t_start = time.time()
            time.sleep(20)
            so_far = ledger_workers(ledger, t_start)
            victim_id = max(so_far, key=lambda k: so_far[k])
            victim = cl.workers[victim_id]
            kids = descendants(victim.pid)
            t_kill = time.time()
            for pid in [victim.pid, *kids]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            victim.wait(10)
            print(f"celery W2: SIGKILL {victim_id} (+{len(kids)} pool children) at {t_kill:.3f}")
            time.sleep(15)
            t_end = time.time()
            time.sleep(SETTLE)
            after = analyze(ledger, {"job_names": names, "t0": math.ceil(t_kill), "t1": t_end})
            at_kill = analyze(
                ledger,
                {"job_names": names, "t0": math.floor(t_kill), "t1": math.floor(t_kill) + 0.5},
            )
            before = analyze(ledger, {"job_names": names, "t0": t_start, "t1": t_kill})
            out["worker_kill"] = {
                "victim": victim_id,
                "runs_before_kill": dict(sorted(so_far.items())),
                "before_kill": {
                    k: before[k] for k in ("fires_expected", "misses", "duplicates", "lag_ms")
                },
                "after_kill": {
                    k: after[k]
                    for k in (
                        "window_s",
                        "fires_expected",
                        "fires_seen",
                        "misses",
                        "duplicates",
                        "lag_ms",
                        "runs_per_worker",
                    )
                },
                "tick_in_progress_at_kill": {k: at_kill[k] for k in ("misses", "duplicates")},
                "missed_sample": after["missed_sample"],
                "misses_by_second_after_kill": misses_by_second(
                    ledger, names, math.ceil(t_kill), t_end
                ),
            }

            # beat crash: nothing else sends ticks
            t_bkill = time.time()
            beat.kill()
            beat.wait(10)
            print(f"celery W2: SIGKILL beat at {t_bkill:.3f}")
            time.sleep(10)
            t_b1 = time.time()
            dead = analyze(ledger, {"job_names": names, "t0": math.ceil(t_bkill), "t1": t_b1})
            # restart beat at once (as a supervisor would)
            cl.start_beat()
            t_restart = time.time()
            time.sleep(15)
            t_b2 = time.time()
            time.sleep(SETTLE)
            restarted = analyze(ledger, {"job_names": names, "t0": t_restart, "t1": t_b2})
            first = first_run_after(ledger, t_restart)
            out["beat_kill"] = {
                "dead_window_s": dead["window_s"],
                "fires_expected": dead["fires_expected"],
                "fires_seen": dead["fires_seen"],
                "misses": dead["misses"],
                "restarted_beat": {
                    "window_s": restarted["window_s"],
                    "fires_expected": restarted["fires_expected"],
                    "fires_seen": restarted["fires_seen"],
                    "misses": restarted["misses"],
                    "first_run_after_restart_s": None
                    if first is None
                    else round(first - t_restart, 2),
                },
            }
        finally:
            out["exit_codes"] = cl.stop()
    cleanup(base, keep)
    if keep:
        out["dir"] = str(base)
    return out


def _lines(ledger: Path) -> list[list[str]]:
    with open(ledger) as f:
        return [p for p in (line.split() for line in f) if len(p) >= 5]


def first_run_after(ledger: Path, t: float) -> float | None:
    times = [float(p[2]) for p in _lines(ledger) if float(p[2]) >= t]
    return min(times) if times else None


def misses_by_second(ledger: Path, names: Sequence[str], t0: int, t1: float) -> list[int]:
    """Per whole second from t0: how many of the N jobs never started for that tick."""
    seen: Counter[str] = Counter()
    for p in _lines(ledger):
        seen[p[1]] += 1
    out = []
    for s in range(t0, math.ceil(t1)):
        iso = datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        out.append(max(0, len(names) - seen[iso]))
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    columns = [
        *w1_columns(),
        ("cpu/sch", 8, cpu_ms("scheduler")),
        ("cpu/brk", 8, cpu_ms("broker")),
        ("redis/r", 7, field("redis_commands_per_run")),
        ("max/mean", 6, field("runs_per_worker_max_over_mean")),
    ]
    note = "(lag in ms; cpu ms per run: scheduler = beat + workers, broker = redis)"
    return render(columns, results, note)


def main(argv: Sequence[str] | None = None) -> int:
    import json

    ap = argparse.ArgumentParser(
        prog="python -m bench.peers.celery_w1", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--jobs", default="10,100")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--w2", action="store_true", help="run W2 (failover) at N=100 instead")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--body", choices=("py", "c"), default="py", help="job body (c: a subprocess)")
    args = ap.parse_args(argv)
    body = use_body(args.body)
    host = host_info()
    if args.w2:
        out = {
            "workload": "W2",
            "peer": "celery+redbeat",
            "host": host,
            **w2(n=100, warmup=args.warmup, keep=args.keep),
        }
        write_json(args.out, out)
        print(json.dumps(out, indent=2))
        return 0
    results = []
    for n in [int(x) for x in args.jobs.split(",") if x]:
        print(f"celery W1: N={n} ...", flush=True)
        r = run_one(n, duration=args.duration, warmup=args.warmup, keep=args.keep)
        results.append(r)
        print(table([r]).splitlines()[1], flush=True)
    out = {
        "workload": "W1",
        "peer": "celery+redbeat",
        "host": host,
        "params": {
            "body": body,
            "jobs": args.jobs,
            "duration": args.duration,
            "warmup": args.warmup,
            "workers": 3,
        },
        "results": results,
    }
    write_json(args.out, out)
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""W1 for APScheduler 3: one process, N cron jobs every second, the same ledger.

Run with the peers venv (``bench/.peers-venv``, created by ``bench/peers/setup.sh``):

    bench/.peers-venv/bin/python -m bench.peers.apscheduler_w1 --jobs 10,100 --duration 30 --warmup 5 \\
        [--out bench/results/peers-apscheduler-w1.json]

Per N, one scheduler process (``--serve``): APScheduler 3 ``BlockingScheduler``,
memory job store, N jobs ``CronTrigger(second="*")``, job defaults as shipped
(``coalesce=True``, ``misfire_grace_time=1``, ``max_instances=1``), the default
executor (a thread pool of 10). The job body is one O_APPEND write of ``job
tick time pid worker`` (worker = ``aps``).

The tick: APScheduler 3 does not give a job function its scheduled time, so
the executor is APScheduler's ``ThreadPoolExecutor`` with one change: for each
scheduled run time it calls APScheduler's own ``run_job`` (misfire check,
events, error handling unchanged) on a view of the job whose kwargs carry
``tick=<that run time>``.

The harness runs that process, waits ``--warmup`` s after its first run,
measures ``--duration`` s, and analyzes the ledger with ``bench.analyze``; CPU
per run is the scheduler process's (no broker, no job processes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peers.common import (
    REPO,
    analyze,
    cleanup,
    host_info,
    meta_for,
    run_body,
    stop_pid,
    tick_iso,
    tidy,
    tree_cpu,
    use_body,
    workdir,
    write_json,
)
from bench.table import cpu_ms, render, w1_columns

SETTLE = 2.0


# --------------------------------------------------------------------------- the scheduler process


def serve(n: int, ledger: str) -> None:
    from apscheduler.executors.base import run_job
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    class WithTick:
        """The job as run_job sees it, with ``tick`` added to its kwargs."""

        def __init__(self, job: Any, run_time: Any) -> None:
            self._job = job
            self.kwargs = {**job.kwargs, "tick": tick_iso(run_time)}

        def __getattr__(self, name: str) -> Any:
            return getattr(self._job, name)

    def run_each(job: Any, alias: str, run_times: list[Any], logger: str) -> list[Any]:
        events = []
        for rt in run_times:
            events += run_job(WithTick(job, rt), alias, [rt], logger)
        return events

    class TickExecutor(ThreadPoolExecutor):
        def _do_submit_job(self, job: Any, run_times: list[Any]) -> None:
            def callback(f: Any) -> None:
                exc = f.exception()
                if exc:
                    self._run_job_error(job.id, exc, exc.__traceback__)
                else:
                    self._run_job_success(job.id, f.result())

            f = self._pool.submit(run_each, job, job._jobstore_alias, run_times, self._logger.name)
            f.add_done_callback(callback)

    def body(job: str, tick: str = "-") -> None:
        run_body(ledger, job, tick, "aps")

    sched = BlockingScheduler(executors={"default": TickExecutor()}, timezone="UTC")
    for i in range(n):
        name = f"j{i:04d}"
        sched.add_job(body, CronTrigger(second="*", timezone="UTC"), id=name, kwargs={"job": name})
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    sched.start()


# --------------------------------------------------------------------------- the harness


def run_one(n: int, *, duration: float, warmup: float, keep: bool) -> dict[str, Any]:
    base = workdir(f"peer-aps-n{n}")
    ledger = base / "ledger"
    ledger.touch()
    names = [f"j{i:04d}" for i in range(n)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(base / "aps.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peers.apscheduler_w1", "--serve", str(n), str(ledger)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=REPO,
        )
    try:
        t = time.time()
        while ledger.stat().st_size == 0:
            if time.time() - t > 60 or proc.poll() is not None:
                raise RuntimeError(f"no run in the ledger; see {base / 'aps.log'}")
            time.sleep(0.1)
        startup = time.time() - t
        time.sleep(warmup)
        t0 = time.time()
        c0 = {"workers": tree_cpu([proc.pid]), "etcd": 0.0, "jobs": 0.0}
        time.sleep(max(0.0, duration - (time.time() - t0)))
        t1 = time.time()
        c1 = {"workers": tree_cpu([proc.pid]), "etcd": 0.0, "jobs": 0.0}
        time.sleep(SETTLE)
    finally:
        code = stop_pid(proc)
    result = {"n": n, **tidy(analyze(ledger, meta_for(names, t0, t1, c0, c1)))}
    result["startup_s"] = round(startup, 2)
    result["exit_code"] = code
    if keep:
        result["dir"] = str(base)
    cleanup(base, keep)
    return result


def table(results: Sequence[dict[str, Any]]) -> str:
    columns = [*w1_columns(), ("cpu/run", 8, cpu_ms("scheduler"))]
    return render(columns, results, "(lag in ms; cpu in ms per run, the scheduler process)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.peers.apscheduler_w1", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--jobs", default="10,100")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--body", choices=("py", "c"), default="py", help="job body (c: a subprocess)")
    ap.add_argument("--serve", nargs=2, metavar=("N", "LEDGER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return 0
    body = use_body(args.body)
    host = host_info()
    results = []
    for n in [int(x) for x in args.jobs.split(",") if x]:
        print(f"apscheduler W1: N={n} ...", flush=True)
        r = run_one(n, duration=args.duration, warmup=args.warmup, keep=args.keep)
        results.append(r)
        print(table([r]).splitlines()[1], flush=True)
    out = {
        "workload": "W1",
        "peer": "apscheduler3",
        "host": host,
        "params": {
            "jobs": args.jobs,
            "duration": args.duration,
            "warmup": args.warmup,
            "body": body,
        },
        "results": results,
    }
    write_json(args.out, out)
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

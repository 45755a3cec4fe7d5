"""W1 for APScheduler 4 (distributed): 3 schedulers on one PostgreSQL, N schedules every second.

Run with its own venv (never the project's ``.venv`` nor ``bench/.peers-venv``),
which ``bench/peers/setup.sh`` creates from ``bench/peers/requirements-aps4.txt``.

(4.0.0a6's SQLAlchemy store imports ``sniffio`` without declaring it; with the
newest anyio (4.16.0) its asyncpg event broker fails on every notification,
``NoEventLoopError`` in the LISTEN callback, so no scheduler ever hears of another's
jobs: anyio is pinned to 4.9.0, SQLAlchemy to 2.0, both of 4.0.0a6's time.)

    bench/.peers4-venv/bin/python -m bench.peers.apscheduler4_w1 --jobs 10,100 --duration 30 --warmup 5 \\
        [--out bench/results/peers-apscheduler4-w1.json]

Per N: a private PostgreSQL cluster (Debian's newest under /usr/lib/postgresql) (``initdb`` into a fresh temp dir, as the
``postgres`` OS user when run as root, trust auth, 127.0.0.1 on a free port,
every other setting as shipped, fsync included); N tasks ``j0000``... (one per
schedule, ``max_running_jobs=1`` as shipped, like APScheduler 3's
``max_instances=1``; the thread-pool executor, as shipped 40 threads) and N
schedules ``CronTrigger(second="*", start_time=<a whole second>)`` (coalesce
``latest`` and no misfire grace time, as shipped) written once by the harness; then 3 scheduler processes
(``--serve``), each an ``AsyncScheduler`` with role ``both`` (it turns due
schedules into jobs and runs jobs) on the shared ``SQLAlchemyDataStore``
(asyncpg) and an ``AsyncpgEventBroker`` (LISTEN/NOTIFY on the same server), which
is what wakes the other schedulers when one of them adds a job. Other scheduler
settings as shipped (``lease_duration`` 30 s, ``max_concurrent_jobs`` 100).

The job body is one O_APPEND write of ``job tick time pid worker`` (worker =
``s1``..``s3``); the tick is the job's ``scheduled_fire_time`` from
``apscheduler.current_job`` (APScheduler 4 sets it for the task, also in the
thread pool: anyio copies the context into the worker thread).

The harness waits ``--warmup`` s after the first run, measures ``--duration``
s, gives 2 s to start the last ticks, stops the schedulers, then PostgreSQL, by
pid, and analyzes the ledger with ``bench.analyze``. CPU per run: "scheduler" =
the 3 scheduler processes (with their children under ``--body c``), "broker" =
PostgreSQL (the postmaster and its backends).

W2 (failover) is :mod:`bench.peers.apscheduler4_w2`; its task, ``w2_body``, is here
so that the schedulers resolve it by this module's name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.peers.common import (
    REPO,
    analyze,
    cleanup,
    free_port,
    host_info,
    meta_for,
    next_whole_second,
    run_body,
    stop_pid,
    tick_iso,
    tidy,
    tree_cpu,
    use_body,
    workdir,
    write_json,
)
from bench.table import cpu_ms, field, render, w1_columns

SETTLE = 2.0
SCHEDULERS = 3
SLEEP_BODY = 0.3  # s a phase 2 run sleeps between its start and end lines


def _pg_bin() -> Path:
    """The newest Debian PostgreSQL's bin dir (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise SystemExit("PostgreSQL not found under /usr/lib/postgresql; run bench/peers/setup.sh")
    return found[-1].parent


PG_BIN = _pg_bin()
MODULE = "bench.peers.apscheduler4_w1"


# --------------------------------------------------------------------------- the job


def body(job: str) -> None:
    """The task (every schedule's): resolved by reference in each scheduler process."""
    from apscheduler import current_job

    tick = tick_iso(current_job.get().scheduled_fire_time)
    run_body(os.environ["PEERS_LEDGER"], job, tick, os.environ["PEERS_WORKER"])


_marks: dict[str, int] = {}


def _mark(ledger: str, job: str, tick: str, worker: str, kind: str) -> None:
    """``job tick time pid worker kind`` with one O_APPEND write (bench.analyze's format)."""
    fd = _marks.get(ledger)
    if fd is None:
        fd = _marks[ledger] = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{job} {tick} {time.time():.9f} {os.getpid()} {worker} {kind}\n".encode())


def w2_body(job: str) -> None:
    """W2's task: ``body`` until the file ``$PEERS_PHASE2`` exists, then a start line,
    0.3 s asleep and an end line in ``$PEERS_LEDGER2`` (the tasks' callables are cached
    by each scheduler, so the switch is a flag, not a new task)."""
    from apscheduler import current_job

    tick = tick_iso(current_job.get().scheduled_fire_time)
    worker = os.environ["PEERS_WORKER"]
    if not os.path.exists(os.environ["PEERS_PHASE2"]):
        run_body(os.environ["PEERS_LEDGER"], job, tick, worker)
        return
    ledger2 = os.environ["PEERS_LEDGER2"]
    _mark(ledger2, job, tick, worker, "start")
    time.sleep(SLEEP_BODY)
    _mark(ledger2, job, tick, worker, "end")


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, data: Path) -> None:
        self.proc = proc
        self.port = port
        self.data = data
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sql(self, query: str) -> str:
        out = subprocess.run(
            [
                *(str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port)),
                *("-U", "postgres", "-d", "postgres", "-Atc", query),
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip()

    def commits(self) -> int:
        out = self.sql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
        return int(out) if out.isdigit() else 0


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that drop to the postgres OS user when we are root (initdb refuses root)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@contextlib.contextmanager
def postgres_server(base: Path) -> Iterator[Postgres]:
    """A private PostgreSQL cluster in a fresh temp dir, 127.0.0.1 on a free port, stopped by pid."""
    root = Path(tempfile.mkdtemp(prefix="etcron-bench-peer-aps4-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    log = open(base / "postgres.log", "ab")  # noqa: SIM115 - closed below
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [
                *(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres"),
                *("--auth=trust", "--encoding=UTF8", "--locale=C"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=root,
            check=True,
            **_as_postgres(),
        )
        proc = subprocess.Popen(
            [
                *(str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port)),
                *("-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=root,
            **_as_postgres(),
        )
        pg = Postgres(proc, port, data)
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [
                    str(PG_BIN / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-q",
                ],
                check=False,
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"postgres did not start; see {base / 'postgres.log'}")
            time.sleep(0.1)
        yield pg
    finally:
        if proc is not None and proc.poll() is None:
            # SIGINT = PostgreSQL's fast shutdown (clients are gone by now); then by pid as usual
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                stop_pid(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- setup and the scheduler processes


def _store_and_broker(url: str) -> tuple[Any, Any, Any]:
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from apscheduler.eventbrokers.asyncpg import AsyncpgEventBroker
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    return engine, SQLAlchemyDataStore(engine), AsyncpgEventBroker.from_async_sqla_engine(engine)


async def setup(n: int, url: str, func_name: str = "body") -> None:
    """Create the tables, the N tasks and the N schedules (before any scheduler runs)."""
    import importlib

    from apscheduler import AsyncScheduler
    from apscheduler.triggers.cron import CronTrigger

    # referenced by module name, not __main__
    func = getattr(importlib.import_module(MODULE), func_name)
    # A whole second: the cron trigger keeps start_time's fraction of a second in
    # every fire time (start_time defaults to now), so "second='*'" alone fires at x.yyy.
    start = datetime.fromtimestamp(next_whole_second(), UTC)
    engine, store, broker = _store_and_broker(url)
    try:
        async with AsyncScheduler(store, broker, cleanup_interval=None) as sched:
            for i in range(n):
                name = f"j{i:04d}"
                await sched.configure_task(name, func=func, job_executor="threadpool")
                await sched.add_schedule(
                    name,
                    CronTrigger(second="*", timezone="UTC", start_time=start),
                    id=name,
                    kwargs={"job": name},
                )
    finally:
        await engine.dispose()


async def serve_async(url: str, worker: str) -> None:
    import logging

    from apscheduler import AsyncScheduler

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    engine, store, broker = _store_and_broker(url)
    try:
        async with AsyncScheduler(store, broker, identity=f"{worker}-{os.getpid()}") as sched:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(sched.stop()))
            await sched.run_until_stopped()
    finally:
        await engine.dispose()


def serve(url: str, worker: str) -> None:
    asyncio.run(serve_async(url, worker))


# --------------------------------------------------------------------------- the harness


def log_problems(base: Path) -> int:
    """Warning/error lines in the schedulers' logs."""
    count = 0
    for p in base.glob("s*.log"):
        for line in p.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback"):
                count += 1
    return count


def run_one(n: int, *, duration: float, warmup: float, keep: bool) -> dict[str, Any]:
    base = workdir(f"peer-aps4-n{n}")
    ledger = base / "ledger"
    ledger.touch()
    names = [f"j{i:04d}" for i in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    codes: list[int | None] = []
    with postgres_server(base) as pg:
        try:
            asyncio.run(setup(n, pg.url))
            for k in range(1, SCHEDULERS + 1):
                env = dict(
                    os.environ, PYTHONPATH=str(REPO), PEERS_LEDGER=str(ledger), PEERS_WORKER=f"s{k}"
                )
                with open(base / f"s{k}.log", "ab") as log:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", MODULE, "--serve", pg.url, f"s{k}"],
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=log,
                            env=env,
                            cwd=REPO,
                        )
                    )
            t = time.time()
            while ledger.stat().st_size == 0:
                if time.time() - t > 60 or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"no run in the ledger; see {base}/s*.log")
                time.sleep(0.1)
            startup = time.time() - t
            time.sleep(warmup)
            pids = [p.pid for p in procs]
            t0 = time.time()
            c0 = {"workers": tree_cpu(pids), "etcd": tree_cpu([pg.pid]), "jobs": 0.0}
            x0 = pg.commits()
            time.sleep(max(0.0, duration - (time.time() - t0)))
            t1 = time.time()
            c1 = {"workers": tree_cpu(pids), "etcd": tree_cpu([pg.pid]), "jobs": 0.0}
            x1 = pg.commits()
            time.sleep(SETTLE)
            left = pg.sql("SELECT count(*) FROM jobs")
        finally:
            codes = [stop_pid(p) for p in procs]
    result = {"n": n, **tidy(analyze(ledger, meta_for(names, t0, t1, c0, c1)))}
    result["pg_commits_per_run"] = round((x1 - x0) / max(1, result["fires_seen"]), 2)
    result["jobs_left_in_store"] = int(left) if left.isdigit() else left
    result["scheduler_log_problems"] = log_problems(base)
    result["startup_s"] = round(startup, 2)
    result["exit_codes"] = codes
    if keep:
        result["dir"] = str(base)
    cleanup(base, keep)
    return result


# --------------------------------------------------------------------------- W2 (failover)


def table(results: Sequence[dict[str, Any]]) -> str:
    columns = [
        *w1_columns(),
        ("cpu sch", 8, cpu_ms("scheduler")),
        ("cpu pg", 8, cpu_ms("broker")),
        ("pg/r", 6, field("pg_commits_per_run")),
    ]
    note = (
        "(lag in ms; cpu ms per run: sch = the 3 schedulers, pg = PostgreSQL; "
        "pg/r = committed transactions per run)"
    )
    return render(columns, results, note)


def versions() -> dict[str, str]:
    out = {}
    for dist in ("apscheduler", "sqlalchemy", "asyncpg", "anyio", "attrs", "tenacity"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    pg = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True)
    out["postgresql"] = pg.stdout.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", default="10,100", help="N list")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--body", choices=("py", "c"), default="py", help="job body (c: a subprocess)")
    ap.add_argument("--serve", nargs=2, metavar=("URL", "WORKER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve[0], args.serve[1])
        return 0
    body_kind = use_body(args.body)
    host = host_info()
    results = []
    for n in [int(x) for x in args.jobs.split(",") if x]:
        print(f"apscheduler4 W1: N={n} ...", flush=True)
        r = run_one(n, duration=args.duration, warmup=args.warmup, keep=args.keep)
        results.append(r)
        print(table([r]).splitlines()[1], flush=True)
    out = {
        "workload": "W1",
        "peer": "apscheduler4",
        "host": host,
        "params": {
            "jobs": args.jobs,
            "duration": args.duration,
            "warmup": args.warmup,
            "body": body_kind,
            "schedulers": SCHEDULERS,
            "versions": versions(),
        },
        "results": results,
    }
    write_json(args.out, out)
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

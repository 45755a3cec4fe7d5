"""W2 (failover) for APScheduler 4 (distributed): SIGKILL one of 3 schedulers, then SIGSTOP one.

Run with the APScheduler 4 venv (``bench/peers/setup.sh``):

    bench/.peers4-venv/bin/python -m bench.peers.apscheduler4_w2 [--jobs 10] \\
        [--out bench/results/peers-apscheduler4-w2.json]

W2 (failover) for APScheduler 4, the setup of :mod:`bench.peers.apscheduler4_w1`, N = ``--jobs``, by default 10 (not 100: at
N=100 APScheduler 4 already misses 7-18 % of the ticks on this 2-core machine
with no fault at all, see W1, which would drown what the faults do). What
governs failover is ``AsyncScheduler.lease_duration``, 30 s as shipped (4.0.0a6
has no data-store ``lock_expiration_delay``): a scheduler claims due schedules
and jobs in PostgreSQL with ``acquired_until = now + lease_duration``, and
another scheduler takes one over only after that has passed (a claimed job
also holds its task's ``running_jobs`` slot, ``max_running_jobs=1``, until it is
released, or, for a dead scheduler's job, until a ``cleanup`` after its lease
has passed -- cleanups run every ``cleanup_interval``, 15 min as shipped, and
when a scheduler starts).

Phase 1 (kill): after ``--warmup``, 20 s, then SIGKILL the scheduler process
that ran the most runs in those 20 s, and measure 15 s more: as etcron's W2
(``bench/w2.py``), ticks T >= the kill time (misses, duplicates, lag, runs per
surviving scheduler, misses per second), the tick in progress at the kill apart,
the longest gap between consecutive runs of a job; plus a look at the store 2 s
later (jobs by claimant, tasks whose ``running_jobs`` slot is taken, claimed
schedules).

Phase 2 (pause): a replacement scheduler ``s4`` is started (3 live again), the
task switches (a flag file) to runs that log a ``start`` line, sleep 0.3 s and
log an ``end`` line, so overlaps are real overlaps (a run of a job starting
before the previous run of that job ended, as ``bench.analyze.overlaps``), not
only duplicate (job, tick) pairs; after 6 s the surviving original scheduler
that ran the most runs since the switch is SIGSTOPped, then SIGCONTed and 8 s
more are measured. The pause is 2 x the lease if that is <= 30 s, else 12 s:
2 x 30 s = 60 s, so 12 s (shorter than the lease: nobody takes over the paused
scheduler's claims, which is the case of a scheduler that stalls and resumes).
Phase 2's window is from 3 s after the switch to the end; misses while paused
are the ticks in [SIGSTOP, SIGCONT). ``--body`` applies to phase 1 only. Whole
run about 1.5 min.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.peers.apscheduler4_w1 import (
    MODULE,
    SCHEDULERS,
    SETTLE,
    SLEEP_BODY,
    Postgres,
    log_problems,
    postgres_server,
    setup,
    versions,
)
from bench.peers.common import (
    REPO,
    analyze,
    cleanup,
    host_info,
    stop_pid,
    use_body,
    workdir,
    write_json,
)

BEFORE = 20.0  # s of phase 1 before the SIGKILL
AFTER = 15.0  # s measured after it
SWITCH = 3.0  # s from the switch to the sleeping body to phase 2's window, and to the SIGSTOP
AFTER_PAUSE = 8.0  # s measured after the SIGCONT


def failover_setting() -> dict[str, Any]:
    """The lease that governs failover, read from the installed APScheduler, and the pause."""
    import attrs
    from apscheduler import AsyncScheduler

    def seconds(v: Any) -> float:
        return float(v.total_seconds() if hasattr(v, "total_seconds") else v)

    fields = attrs.fields(AsyncScheduler)
    lease = seconds(fields.lease_duration.default)
    cleanup_every = seconds(fields.cleanup_interval.default)
    pause = 2 * lease if 2 * lease <= 30 else 12.0
    return {
        "setting": "AsyncScheduler.lease_duration",
        "value_s": lease,
        "governs": (
            "claims on schedules and jobs in the data store: acquired_until = now + "
            "lease_duration, renewed every lease_duration / 2; another scheduler takes a "
            "claimed schedule or job only once acquired_until has passed (4.0.0a6 has no "
            "data-store lock_expiration_delay)"
        ),
        "related": {
            "AsyncScheduler.cleanup_interval_s": cleanup_every,
            "why": (
                "a job claimed by a dead scheduler keeps its task's running_jobs slot "
                "(max_running_jobs=1) until a cleanup releases it as abandoned: every "
                "cleanup_interval (and when a scheduler starts) once its lease has passed"
            ),
        },
        "pause_s": pause,
        "pause_rule": (
            f"2 x lease = {2 * lease:g} s"
            + (" <= 30 s, so the pause is 2 x lease" if pause == 2 * lease else " > 30 s, so 12 s")
        ),
    }


def ledger_rows(ledger: Path) -> list[tuple[str, int, float, int, str, str]]:
    """(job, tick in whole seconds, start/end time, pid, worker, kind) per ledger line."""
    out = []
    with contextlib.suppress(OSError), open(ledger, errors="replace") as f:
        for line in f:
            p = line.split()
            if len(p) < 5:
                continue
            with contextlib.suppress(ValueError):
                tick = round(datetime.fromisoformat(p[1].replace("Z", "+00:00")).timestamp())
                kind = p[5] if len(p) > 5 else "start"
                out.append((p[0], tick, float(p[2]), int(p[3]), p[4], kind))
    return out


def runs_by_worker(ledger: Path, since: float) -> Counter[str]:
    """Runs started at or after ``since``, per scheduler."""
    return Counter(r[4] for r in ledger_rows(ledger) if r[5] == "start" and r[2] >= since)


def misses_by_second(
    rows: Sequence[tuple[str, int, float, int, str, str]], names: Sequence[str], t0: int, t1: float
) -> list[int]:
    """Per whole second T in [t0, t1): how many of the jobs never started for tick T."""
    seen: dict[int, set[str]] = defaultdict(set)
    for job, tick, _, _, _, kind in rows:
        if kind == "start":
            seen[tick].add(job)
    wanted = set(names)
    return [len(wanted - seen[s]) for s in range(t0, math.ceil(t1))]


def never_run(
    rows: Sequence[tuple[str, int, float, int, str, str]], names: Sequence[str], t0: int, t1: float
) -> list[str]:
    """Jobs with no start for any tick in [t0, t1)."""
    ran = {r[0] for r in rows if r[5] == "start" and t0 <= r[1] < t1}
    return sorted(set(names) - ran)


def max_gap(
    rows: Sequence[tuple[str, int, float, int, str, str]], t0: float, t1: float
) -> float | None:
    """Longest time between consecutive run starts of one job, over starts in [t0, t1)
    (as ``bench.analyze.max_gap``)."""
    starts: dict[str, list[float]] = defaultdict(list)
    for job, _, at, _, _, kind in rows:
        if kind == "start" and t0 <= at < t1:
            starts[job].append(at)
    gaps = [b - a for s in starts.values() for a, b in itertools.pairwise(sorted(s))]
    return round(max(gaps), 3) if gaps else None


def overlaps_and_unfinished(
    rows: Sequence[tuple[str, int, float, int, str, str]], t0: int, t1: int
) -> tuple[int, int]:
    """Over ticks in [t0, t1): consecutive runs of a job where the later started before
    the earlier ended, and runs with no end line (as ``bench.analyze.overlaps`` and
    ``unfinished``; a run is (job, tick, pid))."""
    spans: dict[tuple[str, int, int], list[float | None]] = {}
    for job, tick, at, pid, _, kind in rows:
        if t0 <= tick < t1:
            span = spans.setdefault((job, tick, pid), [None, None])
            span[0 if kind == "start" else 1] = at
    per_job: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for (job, _, _), (start, end) in spans.items():
        if start is not None:
            per_job[job].append((start, end))
    bad = unfinished = 0
    for runs in per_job.values():
        runs.sort(key=lambda r: r[0])
        unfinished += sum(1 for _, end in runs if end is None)
        for (_, end_a), (start_b, _) in itertools.pairwise(runs):
            if end_a is not None and start_b < end_a:
                bad += 1
    return bad, unfinished


def store_state(pg: Postgres) -> dict[str, Any]:
    """Who holds what in the store: jobs by claimant, taken task slots, claimed schedules."""

    def rows(query: str) -> list[list[str]]:
        return [line.split("|") for line in pg.sql(query).splitlines() if line]

    def who(acquired_by: str) -> str:
        return acquired_by.split("-")[0] if acquired_by else "unclaimed"

    jobs: Counter[str] = Counter()
    for by, count in rows("SELECT coalesce(acquired_by, ''), count(*) FROM jobs GROUP BY 1"):
        jobs[who(by)] += int(count)
    return {
        "jobs_by_claimant": dict(sorted(jobs.items())),
        "tasks_with_running_jobs": {
            t: int(c)
            for t, c in rows(
                "SELECT id, running_jobs FROM tasks WHERE running_jobs <> 0 ORDER BY id"
            )
        },
        "claimed_schedules": {
            s: who(by)
            for s, by in rows(
                "SELECT id, acquired_by FROM schedules WHERE acquired_by IS NOT NULL ORDER BY id"
            )
        },
    }


def start_scheduler(
    base: Path, url: str, worker: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    full = dict(os.environ, PYTHONPATH=str(REPO), PEERS_WORKER=worker, **env)
    with open(base / f"{worker}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", MODULE, "--serve", url, worker],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=full,
            cwd=REPO,
        )


def wait_for_run(
    ledger: Path, procs: dict[str, subprocess.Popen[bytes]], timeout: float, worker: str = ""
) -> float | None:
    """Seconds until ``ledger`` holds a run (by ``worker`` if given); None on timeout."""
    t = time.time()
    while time.time() - t < timeout:
        rows = ledger_rows(ledger)
        if any(not worker or r[4] == worker for r in rows):
            return round(time.time() - t, 2)
        if any(p.poll() is not None for w, p in procs.items() if not worker or w == worker):
            break
        time.sleep(0.1)
    return None


def log_problem_sample(base: Path, limit: int = 8) -> dict[str, int]:
    """Warning/error/traceback lines of the schedulers' logs, timestamps dropped, counted."""
    out: Counter[str] = Counter()
    for p in sorted(base.glob("s*.log")):
        for line in p.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line:
                out[f"{p.stem}: " + line.split(" ", 2)[-1][:160]] += 1
            elif line.startswith("Traceback") or (
                line[:1].isalpha() and "Error" in line.split(":")[0]
            ):
                out[f"{p.stem}: " + line[:160]] += 1
    return dict(out.most_common(limit))


def w2(n: int, *, warmup: float, keep: bool) -> dict[str, Any]:
    t_begin = time.time()
    setting = failover_setting()
    pause_s = setting["pause_s"]
    base = workdir("peer-aps4-w2")
    ledger, ledger2, flag = base / "ledger", base / "ledger2", base / "phase2"
    ledger.touch()
    ledger2.touch()
    snap1, snap2 = base / "ledger-phase1", base / "ledger-phase2"
    names = [f"j{i:04d}" for i in range(n)]
    env = {"PEERS_LEDGER": str(ledger), "PEERS_LEDGER2": str(ledger2), "PEERS_PHASE2": str(flag)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    out: dict[str, Any] = {"n": n}
    with postgres_server(base) as pg:
        try:
            asyncio.run(setup(n, pg.url, "w2_body"))
            for k in range(1, SCHEDULERS + 1):
                procs[f"s{k}"] = start_scheduler(base, pg.url, f"s{k}", env)
            out["startup_s"] = wait_for_run(ledger, procs, 60)
            if out["startup_s"] is None:
                raise RuntimeError(f"no run in the ledger; see {base}/s*.log")
            time.sleep(warmup)

            # phase 1: SIGKILL the busiest scheduler ------------------------------
            t_start = time.time()
            time.sleep(BEFORE)
            so_far = runs_by_worker(ledger, t_start)
            victim_id = max(sorted(so_far), key=lambda w: so_far[w])
            victim = procs[victim_id]
            t_kill = time.time()
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            print(f"apscheduler4 W2: SIGKILL {victim_id} (pid {victim.pid}) at {t_kill:.3f}")
            time.sleep(AFTER)
            t_end = time.time()
            time.sleep(SETTLE)
            shutil.copyfile(ledger, snap1)
            store_after_kill = store_state(pg)

            # phase 2: a replacement, the sleeping body, SIGSTOP / SIGCONT ---------
            t_spare = time.time()
            procs["s4"] = start_scheduler(base, pg.url, "s4", env)
            spare_first_run = wait_for_run(ledger, procs, 10, "s4")
            flag.touch()
            t_flag = time.time()
            time.sleep(SWITCH)
            p_start = time.time()
            time.sleep(SWITCH)
            since_flag = runs_by_worker(ledger2, t_flag)
            survivors = [w for w in procs if w not in (victim_id, "s4")]
            paused_id = max(survivors, key=lambda w: since_flag[w])
            paused = procs[paused_id]
            t_stop = time.time()
            paused.send_signal(signal.SIGSTOP)
            print(f"apscheduler4 W2: SIGSTOP {paused_id} for {pause_s:g} s at {t_stop:.3f}")
            time.sleep(pause_s)
            paused.send_signal(signal.SIGCONT)
            t_cont = time.time()
            time.sleep(AFTER_PAUSE)
            p_end = time.time()
            time.sleep(SETTLE)
            shutil.copyfile(ledger2, snap2)
            store_at_end = store_state(pg)
        finally:
            for p in procs.values():  # a stopped process first gets going again
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(signal.SIGCONT)
            out["exit_codes"] = {w: stop_pid(p) for w, p in procs.items()}

    # phase 1 figures (from the ledger as it was 2 s after the window) -------------
    rows1 = ledger_rows(snap1)
    in_progress = math.floor(t_kill)

    def fires(path: Path, t0: float, t1: float) -> dict[str, Any]:
        return analyze(path, {"job_names": names, "t0": t0, "t1": t1})

    after = fires(snap1, math.ceil(t_kill), t_end)
    at_kill = fires(snap1, in_progress, in_progress + 0.5)
    before = fires(snap1, t_start, t_kill)
    whole = fires(snap1, t_start, t_end)
    out["scheduler_kill"] = {
        "victim": victim_id,
        "killed_at_fraction_of_second": round(t_kill - in_progress, 3),
        "runs_before_kill": dict(sorted(so_far.items())),
        "before_kill": {
            k: before[k] for k in ("window_s", "fires_expected", "misses", "duplicates", "lag_ms")
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
        "misses_by_second_after_kill": misses_by_second(rows1, names, math.ceil(t_kill), t_end),
        "jobs_never_run_after_kill": never_run(rows1, names, math.ceil(t_kill), t_end),
        "duplicates_whole_phase": whole["duplicates"],
        "misses_whole_phase": whole["misses"],
        "max_gap_between_runs_s": max_gap(rows1, t_start, t_end),
        "max_gap_before_kill_s": max_gap(rows1, t_start, t_kill),
        "store_2s_after_window": store_after_kill,
    }

    # phase 2 figures -------------------------------------------------------------
    rows2 = ledger_rows(snap2)
    pause = fires(snap2, p_start, p_end)
    during = fires(snap2, t_stop, t_cont)
    after_cont = fires(snap2, t_cont, p_end)
    n_overlaps, n_unfinished = overlaps_and_unfinished(rows2, math.ceil(p_start), math.ceil(p_end))
    out["pause"] = {
        "spare": "s4",
        "spare_first_run_s": spare_first_run,
        "spare_started_after_kill_s": round(t_spare - t_kill, 2),
        "paused": paused_id,
        "runs_since_switch_before_pause": dict(sorted(since_flag.items())),
        "paused_for_s": round(t_cont - t_stop, 2),
        "window_s": pause["window_s"],
        "fires_expected": pause["fires_expected"],
        "fires_seen": pause["fires_seen"],
        "duplicates": pause["duplicates"],
        "overlaps": n_overlaps,
        "overlaps_are": (
            "real overlaps: a run (start line, 0.3 s asleep, end line) of a job starting "
            "before the previous run of that job ended, as bench.analyze.overlaps"
        ),
        "runs_without_end_line": n_unfinished,
        "misses": pause["misses"],
        "misses_while_paused": during["misses"],
        "ticks_while_paused": during["window_s"],
        "misses_after_sigcont": after_cont["misses"],
        "lag_ms": pause["lag_ms"],
        "lag_ms_ticks_while_paused": during["lag_ms"],
        "runs_per_worker": pause["runs_per_worker"],
        "runs_per_worker_ticks_while_paused": during["runs_per_worker"],
        "missed_sample": pause["missed_sample"],
        "misses_by_second": misses_by_second(rows2, names, math.ceil(p_start), p_end),
        "pause_starts_at_second": math.ceil(t_stop) - math.ceil(p_start),
        "pause_ends_at_second": math.ceil(t_cont) - math.ceil(p_start),
        "store_2s_after_window": store_at_end,
    }
    out["failover_setting"] = setting
    out["scheduler_log_problems"] = log_problems(base)
    out["scheduler_log_sample"] = log_problem_sample(base)
    out["runtime_s"] = round(time.time() - t_begin, 1)
    if keep:
        out["dir"] = str(base)
    cleanup(base, keep)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.peers.apscheduler4_w2", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--jobs", type=int, default=10, help="N (default 10)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--body", choices=("py", "c"), default="py", help="phase 1's job body")
    args = ap.parse_args(argv)
    body_kind = use_body(args.body)
    host = host_info()
    n = args.jobs
    print(f"apscheduler4 W2: N={n} ...", flush=True)
    w2_out = w2(n, warmup=args.warmup, keep=args.keep)
    out = {
        "workload": "W2",
        "peer": "apscheduler4",
        "host": host,
        "params": {
            "jobs": n,
            "warmup": args.warmup,
            "before_kill_s": BEFORE,
            "after_kill_s": AFTER,
            "after_pause_s": AFTER_PAUSE,
            "pause_s": w2_out["failover_setting"]["pause_s"],
            "phase2_body_sleep_s": SLEEP_BODY,
            "body": body_kind,
            "schedulers": SCHEDULERS,
            "versions": versions(),
        },
        **w2_out,
    }
    write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Read a benchmark ledger and say what happened.

The ledger's line format, reader and checker (duplicates, overlaps, misses) are
:mod:`proof.ledger`, shared with the chaos suite and the tests; this module turns
them into the benchmark's figures (fires, lag, spread, CPU and etcd writes per run).

The window is [t0, t1): the ticks counted are the whole seconds T with
t0 <= T < t1; every job is expected to start once at each of them.

    python -m bench.analyze LEDGER [--meta META.json] [--start T0 --end T1]

``META.json`` (written by ``bench.w1 --keep``) holds the window, the job names,
and CPU and etcd revision samples taken at t0 and t1; without it the window is
the whole seconds strictly between the first and the last tick in the ledger.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.common import percentile, rounded
from bench.table import cpu_ms, field, render, w1_columns
from proof import ledger
from proof.ledger import Line


def window_ticks(t0: float, t1: float) -> list[int]:
    """Tick times (ms) of the whole seconds T with t0 <= T < t1."""
    return [s * 1000 for s in range(math.ceil(t0), math.ceil(t1))]


def fires(lines: Iterable[Line], jobs: Sequence[str], t0: float, t1: float) -> dict[str, Any]:
    """Expected and seen starts, duplicates, misses and start lag for ticks in [t0, t1)."""
    ticks = window_ticks(t0, t1)
    lo, hi = math.ceil(t0) * 1000, math.ceil(t1) * 1000
    starts = [x for x in lines if x.kind == "start" and lo <= x.tick_ms < hi]
    started = {(x.job, x.tick_ms) for x in starts}
    expected = {(j, t) for j in jobs for t in ticks}
    lags = [x.lag_ms for x in starts]
    per_worker = Counter(x.worker for x in starts)
    runs = list(per_worker.values())
    missed = sorted(
        (j, t * 1000) for j, t in ledger.misses(starts, jobs, [t // 1000 for t in ticks])
    )
    return {
        "window_s": len(ticks),
        "jobs": len(jobs),
        "fires_expected": len(expected),
        "fires_seen": len(starts),
        "duplicates": sum(n - 1 for n in ledger.duplicates(starts).values()),
        "misses": len(missed),
        "unexpected": len(started - expected),
        "lag_ms": {
            "p50": rounded(percentile(lags, 50)),
            "p99": rounded(percentile(lags, 99)),
            "max": rounded(max(lags) if lags else None),
        },
        "runs_per_worker": dict(sorted(per_worker.items())),
        "runs_per_worker_max_over_mean": (
            round(max(runs) / (sum(runs) / len(runs)), 3) if runs else None
        ),
        "missed_sample": [[j, t // 1000] for j, t in missed[:5]],
    }


def max_gap(lines: Iterable[Line], t0: float, t1: float) -> float | None:
    """Longest time between consecutive run starts of one job, over starts in [t0, t1)."""
    starts: dict[str, list[float]] = defaultdict(list)
    for x in lines:
        if x.kind == "start" and t0 <= x.at < t1:
            starts[x.job].append(x.at)
    gaps = [b - a for s in starts.values() for a, b in itertools.pairwise(sorted(s))]
    return round(max(gaps), 3) if gaps else None


def costs(meta: dict[str, Any], runs: int) -> dict[str, Any]:
    """CPU ms per run (workers, etcd, jobs) and etcd writes per run from the t0/t1 samples."""
    if not runs or "cpu_before" not in meta:
        return {}
    before, after = meta["cpu_before"], meta["cpu_after"]
    cpu = {k: round((after[k] - before[k]) * 1000 / runs, 2) for k in ("workers", "etcd", "jobs")}
    writes = meta["rev_after"] - meta["rev_before"]
    heartbeats = meta.get("registration_writes", 0)
    seconds = meta["t1"] - meta["t0"]
    return {
        "cpu_ms_per_run": cpu,
        "cpu_cores_busy": {
            k: round((after[k] - before[k]) / seconds, 2) for k in ("workers", "etcd", "jobs")
        },
        "etcd_writes": writes,
        "etcd_writes_per_run": round(writes / runs, 3),
        "etcd_writes_per_run_excl_registration": round((writes - heartbeats) / runs, 3),
    }


def analyze(path: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    lines = ledger.read(path)
    meta = dict(meta or {})
    jobs = meta.get("job_names") or sorted({x.job for x in lines})
    if "t0" not in meta:
        ticks = sorted({x.tick_ms for x in lines})
        if len(ticks) < 3:
            raise SystemExit(f"{path}: too few ticks to pick a window; pass --start/--end")
        meta["t0"], meta["t1"] = ticks[0] / 1000 + 0.5, ticks[-1] / 1000
    out = fires(lines, jobs, meta["t0"], meta["t1"])
    out |= costs(meta, out["fires_seen"])
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    columns = [
        *w1_columns(lag_width=7),
        ("cpu/w", 7, cpu_ms("workers")),
        ("cpu/etcd", 7, cpu_ms("etcd")),
        ("cpu/job", 7, cpu_ms("jobs")),
        ("wr/run", 6, field("etcd_writes_per_run")),
        ("max/mean", 6, field("runs_per_worker_max_over_mean")),
    ]
    note = "(lag in ms; cpu in ms per run; wr/run = etcd revisions per run; max/mean runs)"
    return render(columns, results, note)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.analyze", description=__doc__.split("\n")[0])
    ap.add_argument("ledger", type=Path)
    ap.add_argument("--meta", type=Path, help="META.json written by bench.w1 --keep")
    ap.add_argument("--start", type=float, help="window start (epoch seconds)")
    ap.add_argument("--end", type=float, help="window end (epoch seconds)")
    args = ap.parse_args(argv)
    meta: dict[str, Any] = json.loads(args.meta.read_text()) if args.meta else {}
    if args.start is not None and args.end is not None:
        meta["t0"], meta["t1"] = args.start, args.end
    result = analyze(args.ledger, meta)
    print(json.dumps(result, indent=2))
    print(table([result]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Read a benchmark ledger and say what happened.

A ledger line is ``job tick time pid worker [kind]``: the job name, ``$ETCRON_TICK``
(ISO UTC with milliseconds), the shell's wall clock at start (``date +%s.%N``),
the shell's pid, ``$ETCRON_WORKER``, and ``start``/``end`` (missing = ``start``).
Each line is one ``printf`` to an O_APPEND file, so lines never interleave.

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import percentile, rounded
from bench.table import cpu_ms, field, render, w1_columns


@dataclass(frozen=True, slots=True)
class Line:
    job: str
    tick_ms: int
    at: float
    pid: int
    worker: str
    kind: str

    @property
    def lag_ms(self) -> float:
        return self.at * 1000 - self.tick_ms


def parse_tick(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def parse_line(text: str) -> Line | None:
    parts = text.split()
    if len(parts) < 4:
        return None
    try:
        return Line(
            job=parts[0],
            tick_ms=parse_tick(parts[1]),
            at=float(parts[2]),
            pid=int(parts[3]),
            worker=parts[4] if len(parts) > 4 else "?",
            kind=parts[5] if len(parts) > 5 else "start",
        )
    except ValueError:
        return None


def read_ledger(path: Path) -> list[Line]:
    if not path.exists():
        return []
    with open(path, errors="replace") as f:
        return [line for line in map(parse_line, f) if line is not None]


def window_ticks(t0: float, t1: float) -> list[int]:
    """Tick times (ms) of the whole seconds T with t0 <= T < t1."""
    return [s * 1000 for s in range(math.ceil(t0), math.ceil(t1))]


def fires(lines: Iterable[Line], jobs: Sequence[str], t0: float, t1: float) -> dict[str, Any]:
    """Expected and seen starts, duplicates, misses and start lag for ticks in [t0, t1)."""
    ticks = window_ticks(t0, t1)
    lo, hi = math.ceil(t0) * 1000, math.ceil(t1) * 1000
    starts = [x for x in lines if x.kind == "start" and lo <= x.tick_ms < hi]
    count = Counter((x.job, x.tick_ms) for x in starts)
    expected = {(j, t) for j in jobs for t in ticks}
    lags = [x.lag_ms for x in starts]
    per_worker = Counter(x.worker for x in starts)
    runs = list(per_worker.values())
    missed = sorted(expected - set(count))
    return {
        "window_s": len(ticks),
        "jobs": len(jobs),
        "fires_expected": len(expected),
        "fires_seen": len(starts),
        "duplicates": sum(c - 1 for c in count.values() if c > 1),
        "misses": len(missed),
        "unexpected": len(set(count) - expected),
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


def runs_of(lines: Iterable[Line]) -> dict[str, list[tuple[float, float | None]]]:
    """Per job, its runs as (start, end or None), ordered by start. A run is (job, tick, pid)."""
    spans: dict[tuple[str, int, int], list[float | None]] = {}
    for x in lines:
        span = spans.setdefault((x.job, x.tick_ms, x.pid), [None, None])
        span[0 if x.kind == "start" else 1] = x.at
    out: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for (job, _, _), (start, end) in spans.items():
        if start is not None:
            out[job].append((start, end))
    for runs in out.values():
        runs.sort()
    return out


def overlaps(lines: Iterable[Line]) -> int:
    """Pairs of consecutive runs of a job where the later started before the earlier ended."""
    bad = 0
    for runs in runs_of(lines).values():
        for (_, end_a), (start_b, _) in itertools.pairwise(runs):
            if end_a is not None and start_b < end_a:
                bad += 1
    return bad


def unfinished(lines: Iterable[Line]) -> int:
    """Runs with a start line and no end line (killed, or still running at the end)."""
    return sum(1 for runs in runs_of(lines).values() for _, end in runs if end is None)


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
    lines = read_ledger(path)
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

"""``python -m tests.chaos [--short] [--only 1,3,5] [--out FILE] [--keep]``

Runs the fault-injection scenarios one at a time (each with its own etcd cluster
and worker processes), prints a summary table, and exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proof import ledger as checker
from tests.chaos import (
    scenarios,
    scenarios_clock,
    scenarios_disk,
    scenarios_etcd,
    scenarios_gray,
    scenarios_net,
)
from tests.chaos.scenarios import Opts, Result, Scenario

SCENARIOS: dict[int, tuple[str, Scenario]] = {
    1: ("baseline", scenarios.baseline),
    2: ("clock skew", scenarios.clock_skew),
    3: ("SIGSTOP holder 2xTTL", scenarios.sigstop),
    4: ("SIGKILL worker mid-run", scenarios.sigkill),
    5: ("kill etcd leader", scenarios_etcd.leader_kill),
    6: ("quorum loss", scenarios_etcd.quorum_loss),
    7: ("restarts + compaction", scenarios_etcd.churn),
    8: ("partition worker from etcd", scenarios_etcd.partition),
    9: ("SIGTERM drain", scenarios.sigterm),
    10: ("bad input", scenarios.bad_input),
    11: ("frozen etcd leader", scenarios_gray.frozen_leader),
    12: ("frozen etcd follower", scenarios_gray.frozen_follower),
    13: ("worker clock +1 h", scenarios_clock.clock_ahead),
    14: ("clock step +1 h while running", scenarios_clock.clock_step_forward),
    15: ("clock step -1 h while running", scenarios_clock.clock_step_back),
    16: ("±0.7 s skew, bound 1 s", scenarios_clock.skew_07),
    17: ("stale and forged keys", scenarios_clock.stale_keys),
    18: ("worker cut from the etcd leader", scenarios_net.leader_link_cut),
    19: ("one-way cut worker -> leader", scenarios_net.one_way_cut),
    20: ("etcd leader with a slow disk", scenarios_net.slow_leader_disk),
    21: ("full log_dir on one worker", scenarios_disk.full_log_dir),
}
SHORT = (1, 4, 3, 5, 11, 13, 17)
TIMEOUT = 240.0  # per scenario: a hang is a failure, never a stuck run

COLUMNS = (
    "#",
    "scenario",
    "ticks",
    "faults",
    "dup",
    "overlap",
    "miss out",
    "miss in",
    "rej",
    "result",
)


async def run_one(n: int, opts: Opts) -> Result:
    name, fn = SCENARIOS[n]
    began = time.monotonic()
    try:
        async with asyncio.timeout(TIMEOUT):
            res = await fn(opts)
    except Exception as exc:
        res = Result(n, name, checker.Report(), [], {}, error=f"{type(exc).__name__}: {exc}")
        res.notes["traceback"] = traceback.format_exc(limit=6)
    res.seconds = time.monotonic() - began
    return res


def row(r: Result) -> list[str]:
    c = r.report.counts()
    verdict = "pass" if r.passed else "FAIL"
    return [
        str(r.number),
        r.name,
        str(c["ticks_checked"]),
        str(len(r.faults)),
        str(c["duplicates"]),
        str(c["overlaps"]),
        str(c["misses_outside"]),
        str(c["misses_inside"]),
        str(c["rejected"]),
        verdict,
    ]


def table(results: list[Result]) -> str:
    rows = [list(COLUMNS), *(row(r) for r in results)]
    widths = [max(len(x[i]) for x in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(x[i].ljust(widths[i]) for i in range(len(x))) + " |" for x in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


async def run(selection: list[int], opts: Opts) -> list[Result]:
    results = []
    for n in selection:
        print(f"--- scenario {n}: {SCENARIOS[n][0]}", flush=True)
        res = await run_one(n, opts)
        failed = [k for k, ok in res.checks.items() if not ok]
        print(f"    {'pass' if res.passed else 'FAIL'} in {res.seconds:.0f}s", flush=True)
        for k in failed:
            print(f"    failed rule: {k}", flush=True)
        if res.error:
            print(f"    error: {res.error}", flush=True)
        if res.notes:
            print(f"    notes: {json.dumps(res.notes, default=str)[:600]}", flush=True)
        results.append(res)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    ap.add_argument("--short", action="store_true", help=f"scenarios {SHORT}, shorter holds")
    ap.add_argument("--only", help="comma-separated scenario numbers")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledgers)")
    args = ap.parse_args(argv)
    selection = list(SHORT) if args.short else sorted(SCENARIOS)
    if args.only:
        selection = [int(x) for x in args.only.split(",") if x.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="etcron-chaos-"))
    began = datetime.now(UTC)
    try:
        results = asyncio.run(run(selection, Opts(workdir, short=args.short)))
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    total = sum(r.seconds for r in results)
    print(f"\n{sum(r.passed for r in results)}/{len(results)} passed in {total:.0f}s")
    if args.out:
        doc = {
            "date": began.isoformat(timespec="seconds"),
            "short": args.short,
            "machine": machine(),
            "seconds": round(total, 1),
            "results": [r.to_json() for r in results],
        }
        args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

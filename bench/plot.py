"""Plot W1 start lag against runs per second from the recorded results.

    bench/.peers-venv/bin/python -m bench.plot --out docs/img/w1-lag.png

Reads ``bench/results/`` (etcron: ``w1.json``, ``w1-high.json``, ``w1-sh.json``;
peers: ``peers-*-w1*.json``) and draws p50 (dashed) and p99 (solid) lag per
scheduler and job body, log scale. Rows with misses are marked with an x.
matplotlib is not a project dependency: run it with the peers' venv (or any
Python that has matplotlib).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

SERIES = [
    ("etcron, body c", ["w1.json", "w1-high.json"]),
    ("etcron, body sh", ["w1-sh.json"]),
    ("APScheduler 3, body c", ["peers-apscheduler-w1-subprocess.json"]),
    ("APScheduler 3, Python function", ["peers-apscheduler-w1.json"]),
    ("Celery + RedBeat, body c", ["peers-celery-w1-subprocess.json"]),
    ("Celery + RedBeat, Python function", ["peers-celery-w1.json"]),
    ("APScheduler 4, 3 schedulers on PostgreSQL, Python function", ["peers-apscheduler4-w1.json"]),
]


def rows(files: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in files:
        path = RESULTS / name
        if path.exists():
            out += json.loads(path.read_text())["results"]
    return sorted(out, key=lambda r: r["n"])


def main(argv: Sequence[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img/w1-lag.png"))
    args = ap.parse_args(argv)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, (label, files) in enumerate(SERIES):
        data = [r for r in rows(files) if r["lag_ms"]["p99"] is not None]
        if not data:
            continue
        color = f"C{i}"
        n = [r["n"] for r in data]
        ax.plot(n, [r["lag_ms"]["p99"] for r in data], "-o", color=color, label=f"{label} p99")
        ax.plot(n, [r["lag_ms"]["p50"] for r in data], "--", color=color, alpha=0.6)
        for r in data:
            if r["misses"]:
                ax.plot(r["n"], r["lag_ms"]["p99"], "x", color="black", markersize=10)
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(250, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("runs per second (N jobs firing every second)")
    ax.set_ylabel("start lag, ms (solid p99, dashed p50)")
    ax.set_title("W1 start lag, 2 cores; x = ticks missed; dotted: 50 and 250 ms targets")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Output retention: does etcd (and worker memory) stop growing? (issue 4)

One fresh etcd (``--quota-backend-bytes 4294967296``, nothing else special), 3
worker processes, ``--jobs`` jobs firing every second, each printing ``--kib``
KiB of text, with job retention ``keep_succeeded: 5, keep_failed: 5``. This
process plays the leader master's housekeeping every 5 s (``Housekeeper.sweep()``
then ``maybe_compact()``, keeping the last 1000 revisions) and samples, every
5 s: etcd's db size (and the part in use), the keys under ``runs/`` and
``output/``, the revision, and the RSS of etcd and of each worker. It stops once
``--runs`` runs have completed (or after ``--max-seconds``).

Completed runs are counted exactly: the union of final run records seen after
each sweep and those each sweep deleted (a subclass of the Housekeeper notes the
ids it expires), so no run is counted twice or missed.

    python -m bench.logs_growth [--runs 10000] [--jobs 50] [--kib 100] \\
        [--out bench/results/logs_growth.json] [--keep]

etcd never gives space back to the file system without ``defrag``: after
compaction freed pages are *reused*, so the file should plateau, not shrink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    KS,
    WorkerProc,
    cleanup,
    connect,
    host_info,
    job_names,
    log_counts,
    put_jobs,
    rounded,
    sample_cpu,
    start_workers,
    stop_workers,
    wait_ready,
    workdir,
    write_json,
)
from devtools.etcd_process import EtcdMember
from scheduler.config import MasterConfig
from scheduler.master.housekeeping import Housekeeper
from scheduler.model import JobSpec
from scheduler.runs import RunRecord

INTERVAL = 5.0
"""Seconds between housekeeping passes (and samples)."""

QUOTA = 4 * 1024**3
WORKERS = 3
KEEP = 5
MILESTONES = (25, 50, 75, 100)
FLAT = 0.10
""""Flat": grows by less than this fraction over the second half of the runs."""

MIB = 1024 * 1024


class CountingHousekeeper(Housekeeper):
    """The real housekeeper; it also remembers which runs it expired (and how they ended)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expired: dict[str, str] = {}
        self.first_tick: float | None = None  # earliest tick among the expired runs

    def _expired(self, job: JobSpec | None, runs: list[tuple[RunRecord, int]]) -> list[RunRecord]:
        doomed = super()._expired(job, runs)
        for r in doomed:
            self.expired[f"{r.job}/{r.run_id}"] = r.status.value
            tick = r.tick.timestamp()
            self.first_tick = tick if self.first_tick is None else min(self.first_tick, tick)
        return doomed


def output_job(name: str, kib: int) -> JobSpec:
    n = kib * 1024
    script = f"head -c {n} /dev/urandom | base64 -w 100 | head -c {n}"
    return JobSpec(
        name=name,
        schedule="* * * * * *",
        command=["/bin/sh", "-c", script],
        keep_succeeded=KEEP,
        keep_failed=KEEP,
    )


def rss_kib(pid: int | None) -> int | None:
    """VmRSS of ``pid`` in KiB, from ``/proc/<pid>/status`` (None if gone)."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def dir_size(path: Path) -> int:
    total = 0
    try:
        for entry in path.iterdir():
            try:
                total += entry.stat().st_size
            except OSError:
                continue
    except OSError:
        pass
    return total


def mib(value: float | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


def growth(a: float | None, b: float | None) -> float | None:
    """Relative growth from ``a`` to ``b`` (0.05 = 5 %)."""
    if a is None or b is None or a == 0:
        return None
    return round((b - a) / a, 4)


HEADER = (
    "| t s | runs done | ticks x jobs | revision | db MiB | in use MiB | WAL MiB | runs keys "
    "| output keys "
    "| deleted | sweep ms | etcd RSS MiB | w1 / w2 / w3 RSS MiB |"
)


def row(s: dict[str, Any]) -> str:
    ws = " / ".join(f"{v / 1024:.1f}" if v else "-" for v in s["worker_rss_kib"])
    etcd_rss = s["etcd_rss_kib"]
    return (
        f"| {s['t']:.0f} | {s['runs_done']} | {s['runs_expected']} | {s['revision']} "
        f"| {mib(s['db_size'])} | {mib(s['db_size_in_use'])} | {mib(s['wal_size'])} "
        f"| {s['runs_keys']} "
        f"| {s['output_keys']} | {s['deleted']} | {s['sweep_ms']:.0f} "
        f"| {etcd_rss / 1024 if etcd_rss else 0:.1f} | {ws} |"
    )


def table(samples: Sequence[dict[str, Any]]) -> str:
    sep = "|" + "---|" * (HEADER.count("|") - 1)
    return "\n".join([HEADER, sep, *(row(s) for s in samples)])


def summarize(samples: list[dict[str, Any]], target: int) -> dict[str, Any]:
    """Values at 25/50/75/100 % of the runs (first sample at or past each) and flatness."""
    points: dict[str, dict[str, Any]] = {}
    for pct in MILESTONES:
        want = target * pct / 100
        hit = next((s for s in samples if s["runs_done"] >= want), None)
        if hit is None:
            continue
        points[f"{pct}%"] = {
            "t": round(hit["t"], 1),
            "runs_done": hit["runs_done"],
            "db_size_mib": mib(hit["db_size"]),
            "db_size_in_use_mib": mib(hit["db_size_in_use"]),
            "wal_mib": mib(hit["wal_size"]),
            "runs_keys": hit["runs_keys"],
            "output_keys": hit["output_keys"],
            "etcd_rss_mib": mib((hit["etcd_rss_kib"] or 0) * 1024),
            "worker_rss_mib": [mib((v or 0) * 1024) for v in hit["worker_rss_kib"]],
        }
    out: dict[str, Any] = {"at": points}
    half, full = points.get("50%"), points.get("100%")
    if half and full:
        db = growth(half["db_size_mib"], full["db_size_mib"])
        workers = [
            growth(a, b)
            for a, b in zip(half["worker_rss_mib"], full["worker_rss_mib"], strict=True)
        ]
        etcd = growth(half["etcd_rss_mib"], full["etcd_rss_mib"])
        out["second_half_growth"] = {"db_size": db, "worker_rss": workers, "etcd_rss": etcd}
        out["db_size_flat"] = db is not None and db < FLAT
        out["worker_rss_flat"] = all(g is not None and g < FLAT for g in workers)
        out["etcd_rss_flat"] = etcd is not None and etcd < FLAT
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = workdir("logs-growth")
    names = job_names(args.jobs)
    samples: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    etcd_args = ["--quota-backend-bytes", str(QUOTA)]
    if args.etcd_snapshot_count is not None:
        etcd_args += ["--snapshot-count", str(args.etcd_snapshot_count)]
    member = EtcdMember("bench", base / "etcd", extra_args=etcd_args)
    ws: list[WorkerProc] = []
    with member:
        client = await connect(member.endpoint)
        try:
            await put_jobs(client, [output_job(n, args.kib) for n in names])
            ws = start_workers(WORKERS, member.endpoint, base)
            meta["startup_s"] = round(await wait_ready(client, ws), 2)
            keeper = CountingHousekeeper(
                client,
                KS,
                MasterConfig(
                    housekeeping_interval=INTERVAL,
                    compact_interval=0,
                    compact_keep_revisions=1000,
                    keep_succeeded=KEEP,
                    keep_failed=KEEP,
                ),
                identity="bench-logs-growth",
            )
            finals: dict[str, str] = {}
            t0 = time.monotonic()
            first_tick: float | None = None  # earliest tick of any run record seen
            cpu0 = sample_cpu(ws, member.pid)
            k = 0
            while True:
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * INTERVAL - time.monotonic()))
                for w in ws:
                    if not w.alive:
                        raise RuntimeError(f"worker {w.id} exited; see {w.log}")
                ts = time.monotonic()
                report = await keeper.sweep()
                compacted = await keeper.maybe_compact()
                sweep_ms = (time.monotonic() - ts) * 1000
                kvs, _ = await client.get_prefix(KS.runs)
                for kv in kvs:
                    try:
                        rec = RunRecord.from_json(kv.value)
                    except ValueError:
                        continue
                    tick = rec.tick.timestamp()
                    first_tick = tick if first_tick is None else min(first_tick, tick)
                    if rec.status.final:
                        finals[f"{rec.job}/{rec.run_id}"] = rec.status.value
                done = {**finals, **keeper.expired}
                if keeper.first_tick is not None:
                    first_tick = min(first_tick or keeper.first_tick, keeper.first_tick)
                st = await client.status()
                http = await asyncio.to_thread(member.status, 2.0)
                s = {
                    "t": time.monotonic() - t0,
                    "runs_done": len(done),
                    # every tick from the first one seen up to now, for every job
                    "runs_expected": (
                        (int(time.time()) - int(first_tick) + 1) * args.jobs
                        if first_tick is not None
                        else 0
                    ),
                    "revision": st["revision"],
                    "raft_index": int(http.get("raftIndex", 0)),
                    "compacted_to": compacted,
                    "db_size": st["db_size"],
                    "db_size_in_use": int(http.get("dbSizeInUse", 0)) or None,
                    "wal_size": dir_size(member.data_dir / "member" / "wal"),
                    "runs_keys": await client.count_prefix(KS.runs),
                    "output_keys": await client.count_prefix(KS.outputs),
                    "deleted": report.deleted,
                    "sweep_ms": sweep_ms,
                    "etcd_rss_kib": rss_kib(member.pid),
                    "worker_rss_kib": [rss_kib(w.pid) for w in ws],
                }
                samples.append(s)
                print(row(s), flush=True)
                if len(done) >= args.runs:
                    break
                if time.monotonic() - t0 > args.max_seconds:
                    meta["stopped_early"] = f"time limit ({args.max_seconds:.0f} s)"
                    print(f"logs_growth: stopping after {args.max_seconds:.0f} s", flush=True)
                    break
                if (s["etcd_rss_kib"] or 0) > args.max_etcd_rss_mib * 1024:
                    meta["stopped_early"] = f"etcd RSS over {args.max_etcd_rss_mib} MiB"
                    print(f"logs_growth: {meta['stopped_early']}; stopping", flush=True)
                    break
            meta["worker_log_warnings_before_stop"] = log_counts(ws)
            cpu = sample_cpu(ws, member.pid).minus(cpu0)
            wall = time.monotonic() - t0
            statuses: dict[str, int] = {}
            for v in done.values():
                statuses[v] = statuses.get(v, 0) + 1
            meta.update(
                {
                    "wall_s": round(wall, 1),
                    "runs_done": len(done),
                    "runs_by_status": statuses,
                    "runs_expected": samples[-1]["runs_expected"],
                    "cpu_cores": {k: round(v / wall, 2) for k, v in cpu.as_dict().items()},
                }
            )
        finally:
            meta["exit_codes"] = stop_workers(ws)
            await client.close()
    summary = summarize(samples, args.runs)
    result = {
        "workload": "logs_growth",
        "host": host_info(),
        "params": {
            "runs": args.runs,
            "jobs": args.jobs,
            "kib": args.kib,
            "workers": WORKERS,
            "keep_succeeded": KEEP,
            "keep_failed": KEEP,
            "housekeeping_interval_s": INTERVAL,
            "compact_keep_revisions": 1000,
            "quota_backend_bytes": QUOTA,
            "etcd_snapshot_count": args.etcd_snapshot_count,
        },
        **meta,
        "keys_kept_at_end": {
            "runs": samples[-1]["runs_keys"] if samples else None,
            "output": samples[-1]["output_keys"] if samples else None,
        },
        "summary": summary,
        "worker_log_warnings_incl_stop": log_counts(ws),
        "samples": [
            {**s, "t": round(s["t"], 1), "sweep_ms": rounded(s["sweep_ms"])} for s in samples
        ],
    }
    if args.keep:
        result["dir"] = str(base)
    else:
        cleanup(base, keep=False)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.logs_growth",
        description="Output retention: etcd db size and worker RSS under steady output",
    )
    ap.add_argument("--runs", type=int, default=10000, help="stop after this many runs")
    ap.add_argument("--jobs", type=int, default=50, help="jobs, each firing every second")
    ap.add_argument("--kib", type=int, default=100, help="KiB of text each run prints")
    ap.add_argument("--max-seconds", type=float, default=360.0, help="stop after this long")
    ap.add_argument(
        "--max-etcd-rss-mib",
        type=int,
        default=4096,
        help="stop early if etcd's RSS passes this (a bound on a shared machine)",
    )
    ap.add_argument(
        "--etcd-snapshot-count",
        type=int,
        help="follow-up experiment: pass --snapshot-count to etcd (default: etcd's own)",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/logs_growth.json"))
    ap.add_argument("--keep", action="store_true", help="keep the logs and etcd data")
    args = ap.parse_args(argv)
    print(table([]), flush=True)
    out = asyncio.run(run(args))
    write_json(args.out, out)
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=2))
    print(table(out["samples"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

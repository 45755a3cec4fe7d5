"""W3: scale of definitions.

For each size N: N jobs written as YAML into a temporary directory of files
(each under 1 MiB, :data:`PER_FILE` jobs per file), schedules ``"@daily"`` and
``"0 3 * * *"`` alternating, ``shell: "true"``. Then:

(a) load + validate: ``scheduler.jobfile.load_jobs(dir)`` in this process;
(b) apply into a fresh etcd: ``JobStore(client, Keyspace(prefix)).apply(specs,
    prune=False, dry_run=False)`` (batches of 100 writes per transaction);
(c) cold worker: one worker *process*, exactly what ``etcron worker`` runs
    (``bench.common.WorkerProc``). Timed from just before ``Popen`` (so Python
    start-up and imports count) until its ``ready`` log line, which the worker
    writes once its job table is loaded and its session is up; the line's own
    timestamp is used, and the time we saw the line is kept as a check. The
    registration (``"jobs": N``, refreshed every 2 s) is polled too, as a
    coarse cross-check. RSS: ``VmRSS`` at ready and 3 s later, and ``VmHWM``
    (peak) from ``/proc/<pid>/status``;
(d) watch propagation with the full set loaded: 3 helper processes, each
    running one in-process ``Worker`` whose ``JobTable.apply`` is wrapped to
    write a timestamp when the target job changes. One job's spec is put
    ``--changes`` times (a new ``description`` each time, one at a time: the
    next put once all 3 have seen the previous one or after 5 s); latency =
    the helper's timestamp after ``JobTable.apply`` returned - the time just
    before the put was sent (the put's round trip is included).

    python -m bench.w3 --sizes 1000,10000,100000 [--out bench/results/w3.json] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    KS,
    PREFIX,
    REPO,
    WorkerProc,
    cleanup,
    connect,
    etcd_config,
    etcd_server,
    host_info,
    percentile,
    rounded,
    stop_workers,
    workdir,
    write_json,
)
from devtools.procfs import cmdline, guards_of
from scheduler.config import Config, LogConfig, WorkerConfig
from scheduler.etcd.client import EtcdClient
from scheduler.jobfile import MAX_FILE_BYTES, load_jobs
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.store import JobStore

PER_FILE = 10_000
"""Jobs per YAML file (about 635 KB, under the 1 MiB limit)."""
SCHEDULES = ('"@daily"', '"0 3 * * *"')
TARGET = "job-000000"
"""The job changed in (d)."""
COLD_TIMEOUT = 180.0
HELPERS_TIMEOUT = 240.0
SEEN_TIMEOUT = 5.0

# One in-process Worker whose JobTable.apply writes a line to ETCRON_BENCH_OUT
# each time the target job's spec changes: {"t": epoch, "desc": description}.
# It also writes {"ready": epoch, "jobs": n} once Worker.start() returned.
_HELPER_CODE = """
import asyncio, json, os, signal, sys, time
from scheduler.config import Config
from scheduler.logconfig import configure_logging
from workers.state import JobTable
from workers.worker import Worker

cfg = Config.model_validate_json(os.environ["ETCRON_BENCH_CONFIG"])
target = os.environ["ETCRON_BENCH_TARGET"]
configure_logging("worker", cfg.log.level, cfg.log.format)
out = open(os.environ["ETCRON_BENCH_OUT"], "a", buffering=1)
original = JobTable.apply

def apply(self, item):
    changed = original(self, item)
    now = time.time()
    for name, spec in changed:
        if name == target and spec is not None:
            out.write(json.dumps({"t": now, "desc": spec.description}) + "\\n")
    return changed

JobTable.apply = apply

async def main():
    worker = Worker(cfg)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start(timeout=float(os.environ["ETCRON_BENCH_START_TIMEOUT"]))
    out.write(json.dumps({"ready": time.time(), "jobs": len(worker.table.jobs)}) + "\\n")
    await stop.wait()
    await worker.stop(grace=5)

asyncio.run(main())
"""


# --------------------------------------------------------------------------- job files


def write_job_files(directory: Path, n: int) -> dict[str, Any]:
    """N jobs as YAML, PER_FILE per file; returns file count and sizes."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = []
    for first in range(0, n, PER_FILE):
        lines = ["jobs:"]
        for i in range(first, min(n, first + PER_FILE)):
            lines.append(f"  - name: job-{i:06d}")
            lines.append(f"    schedule: {SCHEDULES[i % 2]}")
            lines.append('    shell: "true"')
        path = directory / f"jobs-{first // PER_FILE:04d}.yaml"
        path.write_text("\n".join(lines) + "\n")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RuntimeError(f"{path} is {size} bytes, over the 1 MiB limit")
        sizes.append(size)
    return {"files": len(sizes), "bytes": sum(sizes), "largest_file_bytes": max(sizes)}


# --------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB (empty if the process is gone)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def ready_event(log: Path) -> dict[str, Any] | None:
    """The worker's ``ready`` log event, if it has been written."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if '"ready"' not in line:
            continue
        with contextlib.suppress(ValueError):
            ev = json.loads(line)
            if ev.get("event") == "ready":
                return ev
    return None


async def registration(client: EtcdClient, worker_id: str) -> dict[str, Any] | None:
    kv, _ = await client.get(KS.worker(worker_id))
    if kv is None:
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(kv.value)
        return data if isinstance(data, dict) else None
    return None


# --------------------------------------------------------------------------- (c) cold worker


async def cold_worker(client: EtcdClient, endpoint: str, base: Path, n: int) -> dict[str, Any]:
    w = WorkerProc("cold", endpoint, base / "cold.log")
    t_spawn = time.time()
    w.start()
    out: dict[str, Any] = {"method": "worker process (workers.daemon.main), ready log line"}
    seen_ready: float | None = None
    seen_reg: float | None = None
    ev: dict[str, Any] | None = None
    rss_at_ready: dict[str, float] = {}
    try:
        while time.time() - t_spawn < COLD_TIMEOUT and (seen_ready is None or seen_reg is None):
            if not w.alive:
                out["exit_code"] = w.proc.returncode if w.proc else None
                break
            if seen_ready is None:
                ev = ready_event(w.log)
                if ev is not None:
                    seen_ready = time.time()
                    rss_at_ready = proc_status(w.pid)
                    w.find_guard()
            if seen_reg is None:
                reg = await registration(client, w.id)
                if reg is not None and reg.get("jobs") == n:
                    seen_reg = time.time()
            await asyncio.sleep(0.05)
        if ev is not None:
            stamp = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()
            out["ready_s"] = round(stamp - t_spawn, 3)
            out["ready_jobs"] = ev.get("jobs")
        out["ready_seen_s"] = rounded(seen_ready - t_spawn, 3) if seen_ready else None
        out["registration_jobs_eq_n_s"] = rounded(seen_reg - t_spawn, 3) if seen_reg else None
        out["rss_mib_at_ready"] = rss_at_ready.get("VmRSS")
        if w.alive:
            await asyncio.sleep(3)
            status = proc_status(w.pid)
            out["rss_mib_3s_later"] = status.get("VmRSS")
            out["peak_rss_mib"] = status.get("VmHWM")
    finally:
        out["exit_code_after_stop"] = stop_workers([w]).get(w.id)
    return out


# --------------------------------------------------------------------------- (d) propagation


class Helper:
    """A helper process running one in-process Worker that timestamps JobTable.apply."""

    def __init__(self, worker_id: str, endpoint: str, base: Path) -> None:
        self.id = worker_id
        self.out = base / f"{worker_id}.stamps"
        self.log = base / f"{worker_id}.log"
        self.config = Config(
            etcd=etcd_config(endpoint),
            worker=WorkerConfig(id=worker_id, lease_ttl=6, listen="127.0.0.1:0"),
            log=LogConfig(level="info", format="json"),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["ETCRON_BENCH_CONFIG"] = self.config.model_dump_json()
        env["ETCRON_BENCH_TARGET"] = TARGET
        env["ETCRON_BENCH_OUT"] = str(self.out)
        env["ETCRON_BENCH_START_TIMEOUT"] = str(HELPERS_TIMEOUT)
        env["PYTHONPATH"] = str(REPO)
        self.out.touch()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER_CODE],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO,
            )

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.out.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


async def propagation(
    client: EtcdClient, endpoint: str, base: Path, n: int, changes: int
) -> dict[str, Any]:
    helpers = [Helper(f"h{i + 1}", endpoint, base) for i in range(3)]
    t_spawn = time.time()
    for h in helpers:
        h.start()
    out: dict[str, Any] = {"method": "3 helper processes, one in-process Worker each"}
    guards: list[int] = []
    try:
        ready: dict[str, float] = {}
        while len(ready) < len(helpers) and time.time() - t_spawn < HELPERS_TIMEOUT:
            for h in helpers:
                if h.id in ready:
                    continue
                if not h.alive:
                    raise RuntimeError(f"helper {h.id} exited; see {h.log}")
                for rec in h.records():
                    if "ready" in rec and rec["jobs"] == n:
                        ready[h.id] = rec["ready"] - t_spawn
            await asyncio.sleep(0.1)
        out["helpers_ready_s"] = {k: round(v, 2) for k, v in sorted(ready.items())}
        if len(ready) < len(helpers):
            out["error"] = "helpers not ready in time"
            return out
        for h in helpers:
            assert h.proc is not None
            guards += guards_of(h.proc.pid)
        out["helpers_rss_mib"] = {
            h.id: proc_status(h.proc.pid).get("VmRSS") for h in helpers if h.proc
        }
        await asyncio.sleep(1)
        lat: dict[str, list[float]] = {h.id: [] for h in helpers}
        not_seen = 0
        for i in range(changes):
            desc = f"v{i}"
            spec = JobSpec(name=TARGET, schedule="@daily", shell="true", description=desc)
            t_put = time.time()
            await client.put(KS.job(TARGET), spec.to_json())
            pending = {h.id: h for h in helpers}
            while pending and time.time() - t_put < SEEN_TIMEOUT:
                for hid, h in list(pending.items()):
                    for rec in h.records():
                        if rec.get("desc") == desc:
                            lat[hid].append((rec["t"] - t_put) * 1000)
                            del pending[hid]
                            break
                if pending:
                    await asyncio.sleep(0.01)
            not_seen += len(pending)
            await asyncio.sleep(0.1)
        every = [x for v in lat.values() for x in v]
        out["changes"] = changes
        out["seen"] = len(every)
        out["not_seen_within_5s"] = not_seen
        out["latency_ms"] = {
            "p50": rounded(percentile(every, 50)),
            "p99": rounded(percentile(every, 99)),
            "max": rounded(max(every) if every else None),
        }
        out["latency_ms_per_worker"] = {
            k: {"p50": rounded(percentile(v, 50)), "p99": rounded(percentile(v, 99))}
            for k, v in lat.items()
        }
    finally:
        out["exit_codes"] = {h.id: h.stop() for h in helpers}
        await asyncio.sleep(0.5)
        for g in guards:
            if b"workers.guard_sidecar" in cmdline(g):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(g, signal.SIGKILL)
    return out


# --------------------------------------------------------------------------- one size


async def run_one(n: int, *, changes: int, keep: bool) -> dict[str, Any]:
    base = workdir(f"w3-n{n}")
    result: dict[str, Any] = {"n": n, "dir": str(base) if keep else None}
    result["files"] = write_job_files(base / "jobs", n)
    t = time.perf_counter()
    specs = load_jobs(base / "jobs")
    result["load_validate_s"] = round(time.perf_counter() - t, 3)
    assert len(specs) == n, (len(specs), n)
    with etcd_server(base) as etcd:
        client = await connect(etcd.endpoint)
        try:
            t = time.perf_counter()
            plan = await JobStore(client, Keyspace(PREFIX)).apply(specs, prune=False, dry_run=False)
            result["apply_s"] = round(time.perf_counter() - t, 3)
            result["apply_batches"] = plan.batches
            result["apply_created"] = len(plan.names("create"))
            del specs, plan
            result["cold_worker"] = await cold_worker(client, etcd.endpoint, base, n)
            result["propagation"] = await propagation(client, etcd.endpoint, base, n, changes)
        finally:
            await client.close()
    cleanup(base, keep=keep)
    return result


# --------------------------------------------------------------------------- output

ROW = "{n:>7} {files:>5} {load:>8} {apply:>8} {ready:>8} {reg:>8} {rss:>8} {hwm:>8} {hready:>16} {p50:>8} {p99:>8} {mx:>8} {seen:>8}"


def table(results: Sequence[dict[str, Any]]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else str(v)

    rows = [
        ROW.format(
            n="N",
            files="files",
            load="load s",
            apply="apply s",
            ready="ready s",
            reg="reg s",
            rss="RSS MiB",
            hwm="peak MiB",
            hready="helpers ready s",
            p50="prop p50",
            p99="prop p99",
            mx="prop max",
            seen="seen",
        )
    ]
    for r in results:
        c, p = r.get("cold_worker", {}), r.get("propagation", {})
        lat = p.get("latency_ms", {})
        hr = p.get("helpers_ready_s", {})
        rows.append(
            ROW.format(
                n=r["n"],
                files=r["files"]["files"],
                load=f(r.get("load_validate_s")),
                apply=f(r.get("apply_s")),
                ready=f(c.get("ready_s")),
                reg=f(c.get("registration_jobs_eq_n_s")),
                rss=f(c.get("rss_mib_3s_later") or c.get("rss_mib_at_ready")),
                hwm=f(c.get("peak_rss_mib")),
                hready="/".join(f(v) for v in hr.values()) or "-",
                p50=f(lat.get("p50")),
                p99=f(lat.get("p99")),
                mx=f(lat.get("max")),
                seen=f"{p.get('seen', '-')}/{3 * p.get('changes', 0)}",
            )
        )
    rows.append(
        "(ready s: worker process start -> 'ready' log line; reg s: -> registration shows "
        "jobs == N; RSS 3 s after ready; prop in ms, put -> JobTable.apply in each of 3 workers)"
    )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for n in args.sizes:
        print(f"W3: N={n} ...", flush=True)
        t = time.time()
        r = await run_one(n, changes=args.changes, keep=args.keep)
        r["wall_s"] = round(time.time() - t, 1)
        results.append(r)
        print(table([r]).splitlines()[1], flush=True)
    return {
        "workload": "W3",
        "host": host_info(),
        "params": {"sizes": args.sizes, "changes": args.changes, "per_file": PER_FILE},
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.w3", description="W3: scale of definitions")
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated job counts")
    ap.add_argument("--changes", type=int, default=50, help="puts of one job in (d)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the job files, logs and etcd data")
    args = ap.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    out = asyncio.run(run(args))
    write_json(args.out, out)
    print(json.dumps(out["results"], indent=2))
    print(table(out["results"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

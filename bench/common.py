"""Shared pieces of the benchmarks: etcd, worker processes, ledger jobs, CPU sampling.

Everything listens on 127.0.0.1 only. Every process started here is stopped by
pid (SIGTERM, then SIGKILL after a timeout); a worker's guard (its sidecar) is
killed by pid too if it outlives its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devtools.etcd_process import EtcdMember
from devtools.procfs import cmdline, guards_of
from proof.ledger import shell_line
from scheduler.config import Config, EtcdConfig, LogConfig, WorkerConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/cron"
KS = Keyspace(PREFIX)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The worker process: exactly what `etcron worker` does (JSON logs on stderr, the
# daemon's signal handling), with the config passed as JSON in the environment.
# ETCRON_BENCH_PROFILE=<file> runs it under cProfile and dumps the stats on exit.
_WORKER_CODE = """
import os, sys
from scheduler.config import Config
from scheduler.logconfig import configure_logging
from workers.daemon import main
cfg = Config.model_validate_json(os.environ["ETCRON_BENCH_CONFIG"])
configure_logging("worker", cfg.log.level, cfg.log.format)
prof = os.environ.get("ETCRON_BENCH_PROFILE")
if prof:
    import cProfile
    p = cProfile.Profile()
    p.enable()
    try:
        rc = main(cfg)
    finally:
        p.disable()
        p.dump_stats(prof)
    sys.exit(rc)
sys.exit(main(cfg))
"""


# --------------------------------------------------------------------------- small helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"etcron-bench-{name}-"))


def write_json(path: Path | None, data: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def parse_set(text: str) -> tuple[str, Any]:
    """``FIELD=JSON`` (``--set capacity=64``): a worker config override."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def job_names(n: int) -> list[str]:
    return [f"j{i:04d}" for i in range(n)]


# --------------------------------------------------------------------------- ledger jobs


def ledger_printf(ledger: Path, kind: str = "start") -> str:
    """One ``printf`` (one write to an O_APPEND fd) of a :mod:`proof.ledger` line."""
    return f"{shell_line(kind)} >> {shlex.quote(str(ledger))}"


BODY_SOURCE = REPO / "bench" / "body" / "ledger_append.c"


def build_body(base: Path, body: str) -> Path | None:
    """The compiled ledger writer for ``body == "c"`` (static if the C library
    allows, else dynamic), or None for the shell body or when no compiler works."""
    if body != "c":
        return None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("bench: no C compiler, using the shell job body", file=sys.stderr)
        return None
    out = base / "ledger_append"
    for extra in (["-static"], []):
        done = subprocess.run(
            [cc, "-O2", *extra, "-o", str(out), str(BODY_SOURCE)], capture_output=True, check=False
        )
        if done.returncode == 0:
            return out
    print("bench: cannot compile the C body, using the shell body", file=sys.stderr)
    return None


def tick_job(name: str, ledger: Path, body: Path | None = None) -> JobSpec:
    """W1's job: every second, append one start line to the ledger, with the
    compiled writer ``body`` or, without one, a shell ``printf``."""
    command = [str(body), str(ledger)] if body else ["/bin/sh", "-c", ledger_printf(ledger)]
    return JobSpec(name=name, schedule="* * * * * *", command=command)


def sleep_job(name: str, ledger: Path, sleep: float = 0.3) -> JobSpec:
    """W2's second phase: a start line, ``sleep`` seconds, an end line."""
    script = f"{ledger_printf(ledger, 'start')}; sleep {sleep}; {ledger_printf(ledger, 'end')}"
    return JobSpec(name=name, schedule="* * * * * *", command=["/bin/sh", "-c", script])


# --------------------------------------------------------------------------- etcd


@contextlib.contextmanager
def etcd_server(base: Path) -> Iterator[EtcdMember]:
    """A fresh single-member etcd on free loopback ports, data under ``base/etcd``."""
    member = EtcdMember("bench", base / "etcd")
    with member:
        yield member


def etcd_config(endpoint: str) -> EtcdConfig:
    return EtcdConfig(endpoints=[endpoint], prefix=PREFIX)


async def connect(endpoint: str) -> EtcdClient:
    return await EtcdClient.connect(etcd_config(endpoint))


async def put_jobs(client: EtcdClient, specs: Sequence[JobSpec]) -> None:
    for spec in specs:
        await client.put(KS.job(spec.name), spec.to_json())


async def registered(client: EtcdClient) -> dict[str, int]:
    """Registered worker ids and the version (number of puts) of their key."""
    kvs, _ = await client.get_prefix(KS.workers)
    return {Keyspace.tail(kv.key, KS.workers): kv.version for kv in kvs}


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class ProcTimes:
    """CPU seconds of one process: its own, and that of its reaped children."""

    own: float
    children: float


def proc_times(pid: int) -> ProcTimes | None:
    """utime+stime and cutime+cstime from ``/proc/<pid>/stat`` (None if gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcTimes((utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)


class WorkerProc:
    """One etcron worker daemon as a process (and its guard, once found)."""

    def __init__(
        self,
        worker_id: str,
        endpoint: str,
        log: Path,
        *,
        profile: Path | None = None,
        **cfg: Any,
    ) -> None:
        cfg.setdefault("lease_ttl", 6)
        cfg.setdefault("listen", "127.0.0.1:0")  # /metrics etc. on a free port
        cfg.setdefault("default_user", "")  # the ledger is the bench user's (see docs/security.md)
        self.id = worker_id
        self.config = Config(
            etcd=etcd_config(endpoint),
            worker=WorkerConfig(id=worker_id, **cfg),
            log=LogConfig(level="info", format="json"),
        )
        self.log = log
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.guard: int | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["ETCRON_BENCH_CONFIG"] = self.config.model_dump_json()
        env["PYTHONPATH"] = str(REPO)
        if self.profile is not None:
            env["ETCRON_BENCH_PROFILE"] = str(self.profile)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                cwd=REPO,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def find_guard(self) -> int | None:
        if self.guard is None and self.alive:
            for child in guards_of(self.pid):
                self.guard = child
        return self.guard

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def times(self) -> tuple[float, float]:
        """(worker + guard CPU, CPU of the worker's reaped children except the guard)."""
        own = proc_times(self.pid) if self.alive else None
        guard = proc_times(self.guard) if self.guard is not None else None
        total = (own.own if own else 0.0) + (guard.own if guard else 0.0)
        return total, own.children if own else 0.0

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def kill_guard(self) -> None:
        """SIGKILL the guard if it is still there (and still a guard)."""
        if self.guard is not None and b"workers.guard_sidecar" in cmdline(self.guard):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.guard, signal.SIGKILL)


def start_workers(
    n: int,
    endpoint: str,
    base: Path,
    *,
    profile_first: bool = False,
    **cfg: Any,
) -> list[WorkerProc]:
    ws = []
    for i in range(n):
        prof = base / f"w{i + 1}.prof" if profile_first and i == 0 else None
        log = base / f"w{i + 1}.log"
        w = WorkerProc(f"w{i + 1}", endpoint, log, profile=prof, **cfg)
        w.start()
        ws.append(w)
    return ws


def stop_workers(ws: Sequence[WorkerProc], timeout: float = 20.0) -> dict[str, int | None]:
    """SIGTERM (drain), wait up to ``timeout``, SIGKILL what is left; exit codes by id."""
    for w in ws:
        with contextlib.suppress(ProcessLookupError):
            w.signal(signal.SIGCONT)
            w.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for w in ws:
        codes[w.id] = w.wait(max(0.1, deadline - time.monotonic()))
        if codes[w.id] is None:
            w.kill()
    time.sleep(0.5)
    for w in ws:
        w.kill_guard()
    return codes


async def wait_ready(client: EtcdClient, ws: Sequence[WorkerProc], timeout: float = 60.0) -> float:
    """Wait until every worker is registered (it holds a session); seconds it took."""
    t = time.monotonic()
    want = {w.id for w in ws}
    while True:
        if want <= set(await registered(client)):
            break
        for w in ws:
            if not w.alive:
                raise RuntimeError(f"worker {w.id} exited; see {w.log}")
        if time.monotonic() - t > timeout:
            raise TimeoutError("workers did not register in time")
        await asyncio.sleep(0.1)
    for w in ws:
        w.find_guard()
    return time.monotonic() - t


def _log_lines(ws: Sequence[WorkerProc]) -> Iterator[str]:
    """Every line of the workers' logs (a log that cannot be read is skipped)."""
    for w in ws:
        try:
            text = w.log.read_text(errors="replace")
        except OSError:
            continue
        yield from text.splitlines()


def log_counts(ws: Sequence[WorkerProc]) -> dict[str, int]:
    """Warning and error lines (and their events) in the workers' JSON logs."""
    counts: dict[str, int] = {}
    for line in _log_lines(ws):
        try:
            ev = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                counts["traceback"] = counts.get("traceback", 0) + 1
            continue
        if ev.get("level") in ("warning", "error", "critical"):
            key = f"{ev['level']}: {ev.get('event')}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def worker_stats(ws: Sequence[WorkerProc]) -> dict[str, Any]:
    """The workers' own counters (their "stopped" log line), summed, with per-run
    ratios: etcd requests sent (a group commit carries many transactions) and
    claim transactions, each per run started. Whole lifetime, warm-up included."""
    total: dict[str, int] = {}
    for line in _log_lines(ws):
        if '"stopped"' not in line:
            continue
        with contextlib.suppress(ValueError):
            for k, v in json.loads(line).get("stats", {}).items():
                total[k] = total.get(k, 0) + int(v)
    started = total.get("started", 0)
    out: dict[str, Any] = {"totals": total}
    if started:
        out["etcd_requests_per_run"] = round(total.get("etcd_requests", 0) / started, 3)
        out["claim_txns_per_run"] = round(total.get("txns", 0) / started, 3)
    return out


@dataclass
class CpuSample:
    """CPU seconds so far: workers (+ guards), their job children, and etcd."""

    workers: float
    jobs: float
    etcd: float

    def minus(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.workers - other.workers, self.jobs - other.jobs, self.etcd - other.etcd
        )

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def sample_cpu(ws: Sequence[WorkerProc], etcd_pid: int | None) -> CpuSample:
    workers = jobs = 0.0
    for w in ws:
        own, children = w.times()
        workers += own
        jobs += children
    etcd = proc_times(etcd_pid) if etcd_pid else None
    return CpuSample(workers, jobs, etcd.own if etcd else 0.0)


def cleanup(base: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(base, ignore_errors=True)


def host_info() -> dict[str, str]:
    """nproc, CPU model, memory, Python and etcd versions: for the results file."""
    from devtools.etcd_process import etcd_version, find_etcd_binary

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem = f"{int(first.split()[1]) / 1024 / 1024:.1f} GiB"
    binary = find_etcd_binary()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "python": sys.version.split()[0],
        "etcd": ".".join(map(str, etcd_version(binary))),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }

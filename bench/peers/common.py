"""Shared pieces of the peer benchmarks (no etcron imports: this runs in the peers venv).

- :func:`ledger_line` writes a ``proof/ledger.py`` line (``job tick run-id token
  worker kind at``; run id ``<pid>.<n>``, token 0) with one ``os.write`` to an
  ``O_APPEND`` file descriptor, so ``bench.analyze`` reads it as etcron's.
- :func:`redis_server` starts a private ``redis-server`` on a free loopback port
  (no persistence) and stops it by pid.
- :func:`tree_cpu` sums utime+stime of a process and its live descendants.
- :func:`analyze` runs ``bench.analyze`` with the project's interpreter.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
CLK_TCK = os.sysconf("SC_CLK_TCK")

_fds: dict[str, int] = {}
_runs = itertools.count(1)


def tick_iso(when: datetime) -> str:
    """A tick as etcron prints ``$ETCRON_TICK``: ISO UTC with milliseconds and ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def ledger_line(ledger: str, job: str, tick: str, worker: str) -> None:
    """Append one ledger line with one write (the fd is opened once per process)."""
    fd = _fds.get(ledger)
    if fd is None:
        fd = _fds[ledger] = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    at = time.time()
    run = f"{os.getpid()}.{next(_runs)}"
    os.write(fd, f"{job} {tick} {run} 0 {worker} start {at:.9f}\n".encode())


BODY_SOURCE = REPO / "bench" / "body" / "ledger_append.c"


def run_body(ledger: str, job: str, tick: str, worker: str) -> None:
    """One run of the job: the Python function (:func:`ledger_line`), or, when
    ``PEERS_BODY`` names the compiled ledger writer, that program as a child
    process with etcron's variables, as etcron runs it (``--body c``)."""
    program = os.environ.get("PEERS_BODY")
    if not program:
        ledger_line(ledger, job, tick, worker)
        return
    env = {"ETCRON_JOB": job, "ETCRON_TICK": tick, "ETCRON_WORKER": worker}
    subprocess.run([program, ledger], env=env, stdin=subprocess.DEVNULL, check=False)


def use_body(body: str) -> str:
    """``c``: compile the ledger writer (as bench.common.build_body does) and
    export it as ``PEERS_BODY`` to this process and the schedulers it starts."""
    if body != "c":
        os.environ.pop("PEERS_BODY", None)
        return "py"
    out = workdir("peer-body") / "ledger_append"
    cc = shutil.which("cc") or shutil.which("gcc")
    for extra in (["-static"], []):
        if (
            cc
            and subprocess.run(
                [cc, "-O2", *extra, "-o", str(out), str(BODY_SOURCE)], capture_output=True
            ).returncode
            == 0
        ):
            os.environ["PEERS_BODY"] = str(out)
            return "c"
    raise SystemExit("--body c needs a C compiler (cc)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"etcron-bench-{name}-"))


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM, wait, SIGKILL: the process we started, by pid."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class Redis:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout

    def commands(self) -> int:
        for line in self.cli("INFO", "stats").splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":")[1])
        return 0


@contextlib.contextmanager
def redis_server(base: Path) -> Iterator[Redis]:
    """A private redis on a free 127.0.0.1 port, no RDB/AOF, stopped by pid at the end."""
    port = free_port()
    log = open(base / "redis.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    r = Redis(proc, port)
    try:
        deadline = time.monotonic() + 10
        while "PONG" not in r.cli("PING"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis did not start; see {base / 'redis.log'}")
            time.sleep(0.05)
        yield r
    finally:
        stop_pid(proc)
        log.close()


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """pid's live descendants (any depth)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parent[int(entry.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def tree_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (utime+stime) of these processes and their live descendants,
    plus what they reaped (cutime+cstime of the roots)."""
    total = 0.0
    for root in pids:
        fields = _stat(root)
        if fields is None:
            continue
        total += sum(int(f) for f in fields[11:15]) / CLK_TCK
        for kid in descendants(root):
            k = _stat(kid)
            if k is not None:
                total += (int(k[11]) + int(k[12])) / CLK_TCK
    return total


def analyze(ledger: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``bench.analyze LEDGER --meta`` with the project's interpreter; its JSON."""
    meta_path = ledger.with_suffix(".meta.json")
    meta_path.write_text(json.dumps(meta))
    out = subprocess.run(
        [str(PROJECT_PYTHON), "-m", "bench.analyze", str(ledger), "--meta", str(meta_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    result, _ = json.JSONDecoder().raw_decode(out.stdout)
    return result


def meta_for(
    names: Sequence[str], t0: float, t1: float, cpu0: dict[str, float], cpu1: dict[str, float]
) -> dict[str, Any]:
    """A ``meta.json`` for bench.analyze: CPU of the scheduler processes is reported
    under ``workers``, the broker's (redis) under ``etcd``; there are no job shells."""
    return {
        "job_names": list(names),
        "t0": t0,
        "t1": t1,
        "cpu_before": cpu0,
        "cpu_after": cpu1,
        "rev_before": 0,
        "rev_after": 0,
        "registration_writes": 0,
    }


def tidy(result: dict[str, Any], runs_key: str = "fires_seen") -> dict[str, Any]:
    """Drop the etcd-revision figures (meaningless here) and relabel the CPU columns."""
    for k in ("etcd_writes", "etcd_writes_per_run", "etcd_writes_per_run_excl_registration"):
        result.pop(k, None)
    for k in ("cpu_ms_per_run", "cpu_cores_busy"):
        if k in result:
            d = result[k]
            result[k] = {"scheduler": d["workers"], "broker": d["etcd"], "jobs": d["jobs"]}
    return result


def host_info() -> dict[str, str]:
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
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg": Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__(),
    }


def next_whole_second() -> float:
    return float(math.floor(time.time()) + 1)


def cleanup(base: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(base, ignore_errors=True)


def write_json(path: Path | None, data: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")

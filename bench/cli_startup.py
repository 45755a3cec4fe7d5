"""CLI start-up time: the median wall time of ``etcron`` commands run as processes.

Starts its own etcd (free loopback ports, data under ``/tmp/etcron-bench-*``)
and one ``etcron master`` with a few jobs, then runs each command ``--runs``
times (default 10) as a subprocess, stdout a pipe, and prints the median, min
and max in milliseconds. ``python -c pass`` (the same interpreter) is the floor.
The master and etcd are stopped by pid at the end, and the directory removed.

``--tree DIR`` puts ``DIR`` first on ``PYTHONPATH`` of the timed commands and
of the master (before any ``PYTHONPATH`` already set), so one console script
measures another checkout (the "before" of a change, a ``git worktree`` or a
``git archive`` beside this one)::

    .venv/bin/python -m bench.cli_startup                       # this tree
    .venv/bin/python -m bench.cli_startup --tree ../before      # another tree
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import etcd_server

REPO = Path(__file__).resolve().parent.parent
ETCRON = str(Path(sys.executable).with_name("etcron"))
JOBS = """\
jobs:
  - name: hello
    schedule: "0 3 * * *"
    command: ["echo", "hello"]
  - name: backup
    schedule: "*/15 * * * *"
    timezone: Europe/Berlin
    timeout: 10m
    shell: "tar czf /tmp/backup.tgz /etc"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _typer_version(env: dict[str, str]) -> str:
    code = "import typer; print(typer.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    return proc.stdout.decode().strip() or "?"


def time_command(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall times in ms of ``runs`` runs of ``argv`` (each must exit 0)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
        times.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return times


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the master exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling a process we started; bounded by the deadline
    raise SystemExit("the master did not become healthy in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--tree", type=Path, default=REPO, help="the checkout to measure")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="etcron-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCRON_")}
    env.pop("COLUMNS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(args.tree.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    token = secrets.token_hex(16)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, float]] = {}
    with etcd_server(base) as etcd:
        master_env = dict(
            env,
            ETCRON_ETCD__ENDPOINTS=etcd.client_url,
            ETCRON_ETCD__PREFIX="/bench-cli",
            ETCRON_MASTER__LISTEN=f"127.0.0.1:{port}",
            ETCRON_MASTER__TOKEN=token,
            ETCRON_LOG__FORMAT="json",
        )
        log = open(base / "master.log", "wb")  # noqa: SIM115 (closed below)
        master = subprocess.Popen([ETCRON, "master"], env=master_env, stdout=log, stderr=log)
        try:
            _wait_healthy(url, master)
            cli_env = dict(env, ETCRON_SERVER=url, ETCRON_TOKEN=token)
            jobs = base / "jobs.yaml"
            jobs.write_text(JOBS)
            time_command([ETCRON, "apply", "-f", str(jobs)], cli_env, 1)
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "etcron --help": [ETCRON, "--help"],
                "etcron version": [ETCRON, "version"],
                "etcron get jobs": [ETCRON, "get", "jobs"],
            }
            for label, argv in commands.items():
                time_command(argv, cli_env, 1)  # warm the page cache
                t = time_command(argv, cli_env, args.runs)
                results[label] = {
                    "median_ms": round(statistics.median(t), 1),
                    "min_ms": round(min(t), 1),
                    "max_ms": round(max(t), 1),
                }
        finally:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(20)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait(10)
            log.close()
    shutil.rmtree(base, ignore_errors=True)
    machine = {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "tree": str(args.tree.resolve()),
        "typer": _typer_version(env),
        "runs": args.runs,
    }
    print(f"machine: {machine['nproc']} cores, {machine['cpu']}, Python {machine['python']}")
    print(f"tree: {machine['tree']}, typer {machine['typer']}")
    print(f"median of {args.runs} runs each, stdout a pipe")
    print(f"{'command':<18} {'median ms':>10} {'min':>8} {'max':>8}")
    for label, r in results.items():
        print(f"{label:<18} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {r['max_ms']:>8.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()

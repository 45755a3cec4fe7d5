"""Soak: the master under hostile clients (issue 12, item 4). Bounded; stops by itself.

One fresh etcd and one ``etcron master`` process (default limits: 1000
connections, 4 MiB bodies, 10 s request timeout). For ``--seconds`` this
process plays the attacker:

- ``--idle`` connections (10,000) that send nothing, held open (the master
  keeps the newest ``max_connections`` and closes the others); with
  ``--reopen`` each one closed is opened again at once: a connection flood
  that keeps the master at its cap all along;
- ``--bodies`` (20) unauthenticated ``PUT``s of ``--body-mb`` (100) MB each,
  sent as fast as the master takes them; each one answered is sent again.

Meanwhile a separate prober process sends ``GET /v1/health`` on a fresh
connection every 100 ms (its own event loop: the attacker's cannot delay it),
and the master's RSS and open descriptors are sampled from ``/proc`` every
250 ms. Printed at the end, and written to ``--out``: health latency
(p50/p99/max, failures), the master's peak RSS and descriptors, what the
attacker saw (connections closed by the master, bodies answered 401 or reset,
bytes the master took per body) and the master's log growth.

    python -m bench.soak_http [--seconds 30] [--idle 10000] [--bodies 20] \\
        [--body-mb 100] [--reopen] [--out bench/results/soak_http.json]

Needs ``ulimit -n`` above ``--idle`` + 1000 (raised here up to the hard limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    cleanup,
    etcd_server,
    host_info,
    percentile,
    rounded,
    workdir,
    write_json,
)

TOKEN = "soak-token-0123456789"

_PROBER = r"""
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
req = b"GET /v1/health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
out = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    start = time.monotonic()
    status = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            status = int(data.split(b" ", 2)[1]) if data else 0
    except OSError:
        status = -1
    out.append([round(start, 3), round((time.monotonic() - start) * 1000, 2), status])
    time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
print(json.dumps(out))
"""


@dataclass
class Attack:
    idle_open: int = 0
    idle_open_at_end: int = 0
    idle_closed_by_master: int = 0
    idle_connect_failures: int = 0
    bodies_sent: int = 0
    bodies_401: int = 0
    bodies_other: dict[str, int] = field(default_factory=dict)
    bytes_taken: list[int] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_rss(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def _proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def _idle_slot(port: int, stop: asyncio.Event, attack: Attack, reopen: bool) -> None:
    """One idle connection; with ``reopen``, opened again whenever the master closes it."""
    first = True
    while first or (reopen and not stop.is_set()):
        first = False
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            attack.idle_connect_failures += 1
            await asyncio.sleep(0.05)
            continue
        attack.idle_open += 1
        try:
            read = asyncio.ensure_future(reader.read(1))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if read.done():
                attack.idle_closed_by_master += 1
            read.cancel()
            stopped.cancel()
        except OSError:
            attack.idle_closed_by_master += 1
        finally:
            attack.idle_open -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _body_slot(port: int, mb: int, stop: asyncio.Event, attack: Attack) -> None:
    """Unauthenticated ``PUT``s of ``mb`` MB, one after the other."""
    chunk = b"x" * 65536
    total = mb * 1_000_000
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        attack.bodies_sent += 1
        head = f"PUT /v1/jobs/soak HTTP/1.1\r\nHost: soak\r\nContent-Length: {total}\r\n\r\n"
        reading = asyncio.ensure_future(_read_all(reader))
        sent = 0
        try:
            writer.write(head.encode())
            while sent < total and not reading.done() and not stop.is_set():
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 10)
                sent += len(chunk)
        except (OSError, TimeoutError):
            pass
        answer = await reading
        attack.bytes_taken.append(sent)
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "reset"
        if status == "401":
            attack.bodies_401 += 1
        else:
            attack.bodies_other[status] = attack.bodies_other.get(status, 0) + 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    out = b""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(15):
            while chunk := await reader.read(65536):
                out += chunk
    return out


async def _sample(pid: int, stop: asyncio.Event, rss: list[int], fds: list[int]) -> None:
    """The master's RSS and open descriptors every 250 ms."""
    while not stop.is_set():
        r, f = _proc_rss(pid), _proc_fds(pid)
        if r is not None:
            rss.append(r)
        if f is not None:
            fds.append(f)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def _wait_health(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await _read_all(reader)
            writer.close()
            if data.startswith(b"HTTP/1.1 200"):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the master did not answer /v1/health")


@dataclass
class Samples:
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


async def _attack(port: int, pid: int, args: argparse.Namespace) -> tuple[Attack, Samples, float]:
    """Run the attack for ``args.seconds``; what the attacker saw, the master's samples."""
    stop = asyncio.Event()
    attack, samples = Attack(), Samples()
    tasks = [asyncio.create_task(_sample(pid, stop, samples.rss, samples.fds))]
    tasks += [
        asyncio.create_task(_body_slot(port, args.body_mb, stop, attack))
        for _ in range(args.bodies)
    ]
    started = time.monotonic()
    for i in range(args.idle):
        tasks.append(asyncio.create_task(_idle_slot(port, stop, attack, args.reopen)))
        if i % 500 == 499:  # let a batch connect; with --reopen a turn of the loop is long
            await asyncio.sleep(0)
            if time.monotonic() - started >= args.seconds:
                break
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, args.seconds - (time.monotonic() - started)))
    attack.idle_open_at_end = attack.idle_open
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return attack, samples, time.monotonic() - started


def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < want:
        raise SystemExit(f"ulimit -n is {soft}; this soak needs about {want}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    _raise_fd_limit(args.idle + args.bodies + 2000)
    base = workdir("soak-http")
    port = _free_port()
    log_path = base / "master.log"
    result: dict[str, Any] = {
        "host": host_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    master: subprocess.Popen[bytes] | None = None
    prober: subprocess.Popen[bytes] | None = None
    try:
        with etcd_server(base) as etcd, open(log_path, "wb") as log:
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "ETCRON_ETCD__ENDPOINTS": etcd.endpoint,
                "ETCRON_ETCD__PREFIX": "/soak",
                "ETCRON_MASTER__LISTEN": f"127.0.0.1:{port}",
                "ETCRON_MASTER__TOKEN": TOKEN,
                "ETCRON_LOG__FORMAT": "json",
            }
            code = "from scheduler.cli.main import main; main()"
            master = subprocess.Popen(
                [sys.executable, "-c", code, "master"], env=env, stdout=log, stderr=log
            )
            asyncio.run(_wait_health(port, 30))
            log_start = log_path.stat().st_size
            rss_idle = _proc_rss(master.pid)
            prober = subprocess.Popen(
                [sys.executable, "-c", _PROBER, str(port), str(args.seconds)],
                stdout=subprocess.PIPE,
            )
            attack, samples, elapsed = asyncio.run(_attack(port, master.pid, args))
            out, _ = prober.communicate(timeout=60)
            probes = json.loads(out)
            ok = [ms for _, ms, status in probes if status == 200]
            failed = [p for p in probes if p[2] != 200]
            result.update(
                attack_seconds=round(elapsed, 1),
                health={
                    "probes": len(probes),
                    "ok": len(ok),
                    "failed": len(failed),
                    "failed_statuses": sorted({p[2] for p in failed}),
                    "p50_ms": rounded(percentile(ok, 50)),
                    "p99_ms": rounded(percentile(ok, 99)),
                    "max_ms": rounded(max(ok) if ok else None),
                    "over_200ms": sum(ms > 200 for ms in ok),
                },
                master={
                    "rss_idle_mb": rounded((rss_idle or 0) / 2**20),
                    "rss_peak_mb": rounded(max(samples.rss) / 2**20 if samples.rss else None),
                    "fds_peak": max(samples.fds) if samples.fds else None,
                    "log_bytes_during_attack": log_path.stat().st_size - log_start,
                    "alive": master.poll() is None,
                },
                attacker={
                    "idle_closed_by_master": attack.idle_closed_by_master,
                    "idle_open_at_end": attack.idle_open_at_end,
                    "idle_connect_failures": attack.idle_connect_failures,
                    "bodies_sent": attack.bodies_sent,
                    "bodies_401": attack.bodies_401,
                    "bodies_other": attack.bodies_other,
                    "mb_taken_per_body_max": rounded(max(attack.bytes_taken, default=0) / 1e6, 2),
                },
            )
    finally:
        _stop(prober)
        _stop(master)
        with contextlib.suppress(OSError):
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            result["master_log_tail"] = [line[:300] for line in tail]
        cleanup(base, args.keep)
    return result


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that every process is stopped by pid


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--body-mb", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reopen", action="store_true", help="reopen idle connections closed")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    result = soak(args)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "host"}, indent=2))
    health, master = result.get("health", {}), result.get("master", {})
    good = (
        health.get("failed") == 0
        and (health.get("max_ms") or 1e9) <= 200
        and (master.get("rss_peak_mb") or 1e9) < 300
    )
    print("PASS" if good else "FAIL: health over 200 ms, a failed probe, or RSS >= 300 MB")
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())

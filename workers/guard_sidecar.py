"""The guard sidecar: a small process that kills a worker's children in time.

Started by the worker as ``python -m workers.guard_sidecar`` (the worker's side, class
:class:`workers.guard.Guard`, is in ``workers/guard.py``).

A worker that is paused (SIGSTOP, a long GC or swap storm) or killed cannot kill
its own children, yet invariant I2 says a run must stop before the server can
expire the lease it runs under. So each worker starts one guard process, in its
own session, and tells it over a pipe:

- ``D <t>``   the lease is proven alive until monotonic time ``t`` (already
              reduced by the safety margin); sent after every keepalive ack;
- ``A <pgid>`` / ``R <pgid>``  a child process group started / ended;
- ``L <lease-id>``  the current session lease (0 = none);
- ``Q``       clean exit: the worker stopped its children itself.

When ``t`` passes without a newer ``D`` the guard SIGKILLs every registered
process group. When the pipe closes without ``Q`` (the worker died), it kills
the children and revokes the lease, so the worker's locks vanish at once and
the next tick runs elsewhere without waiting for the TTL. CLOCK_MONOTONIC is
system-wide on Linux, so both processes read the same clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time


def _kill(pgids: set[int]) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _log(msg: str) -> None:
    print(f"etcron-guard[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def _revoke(etcd: dict[str, object], lease: int) -> None:
    import asyncio

    from scheduler.config import EtcdConfig
    from scheduler.etcd.client import EtcdClient

    async def go() -> None:
        cfg = EtcdConfig.model_validate(etcd)
        async with asyncio.timeout(5):
            client = await EtcdClient.connect(cfg)
            try:
                await client.revoke(lease)
            finally:
                await client.close()

    try:
        asyncio.run(go())
        _log(f"worker gone: revoked lease {lease:x}")
    except Exception as exc:  # the lease will expire on its own
        _log(f"worker gone: could not revoke lease {lease:x}: {exc!r}")


def main() -> int:
    fd = sys.stdin.fileno()
    buf = b""
    etcd: dict[str, object] | None = None
    pgids: set[int] = set()
    deadline = float("inf")
    lease = 0
    while True:
        timeout = None
        if pgids and deadline != float("inf"):
            timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            if pgids:
                _log(f"lease not proven alive: killing process groups {sorted(pgids)}")
                _kill(pgids)
                pgids.clear()
            continue
        data = os.read(fd, 65536)
        if not data:
            if pgids:
                _log(f"worker gone: killing process groups {sorted(pgids)}")
                _kill(pgids)
            if lease and etcd is not None:
                _revoke(etcd, lease)
            return 0
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if etcd is None:  # the first line: the etcd config, to revoke the lease
                etcd = json.loads(line)
                continue
            cmd, _, arg = line.decode().partition(" ")
            if cmd == "D":
                deadline = float(arg)
            elif cmd == "A":
                pgids.add(int(arg))
                if time.monotonic() >= deadline:
                    _kill({int(arg)})
            elif cmd == "R":
                pgids.discard(int(arg))
            elif cmd == "L":
                lease = int(arg)
            elif cmd == "Q":
                return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(main())

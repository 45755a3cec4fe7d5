#!/usr/bin/env python3
"""A fenced ledger that chaos-suite jobs write to (standard library only).

    python3 tests/chaos/ledger.py LEDGER start|end
    python3 tests/chaos/ledger.py LEDGER beat SECONDS   # a line every 0.1 s

Each line is ``job tick run-id fencing-token worker kind epoch-seconds``, read from
the ETCRON_* environment a worker gives its children, appended with one
``O_APPEND`` write while holding an exclusive ``flock`` on the ledger.

Like a downstream system that honours fencing tokens, the ledger keeps the highest
token it accepted per job in a sidecar file (``LEDGER.fence``, JSON, updated under
the same lock). A write whose token is lower is *rejected*: it is still recorded,
as kind ``rejected:<kind>`` (the checker counts them, and they prove the stale run
was alive), and the script exits 3 so a stale job stops writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time

REJECTED = 3


def write(ledger: str, kind: str) -> bool:
    env = os.environ
    job = env.get("ETCRON_JOB", "?")
    token = int(env.get("ETCRON_FENCING_TOKEN") or 0)
    fence = ledger + ".fence"
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with open(fence) as f:
                highest = json.load(f)
        except (OSError, ValueError):
            highest = {}
        ok = token >= int(highest.get(job, 0))
        if ok and token > int(highest.get(job, 0)):
            highest[job] = token
            tmp = f"{fence}.{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(highest, f)
            os.replace(tmp, fence)
        fields = [
            job,
            env.get("ETCRON_TICK", "?"),
            env.get("ETCRON_RUN_ID", "?"),
            str(token),
            env.get("ETCRON_WORKER", "?"),
            kind if ok else f"rejected:{kind}",
            f"{time.time():.6f}",
        ]
        os.write(fd, (" ".join(fields) + "\n").encode())
    finally:
        os.close(fd)  # releases the flock
    return ok


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in ("start", "end", "beat"):
        print(__doc__, file=sys.stderr)
        return 2
    ledger, kind = argv[0], argv[1]
    if kind != "beat":
        return 0 if write(ledger, kind) else REJECTED
    until = time.monotonic() + float(argv[2] if len(argv) > 2 else 1)
    while time.monotonic() < until:
        if not write(ledger, "beat"):
            return REJECTED
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

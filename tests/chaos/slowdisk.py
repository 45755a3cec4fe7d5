"""A slow disk for one process: the cgroup v1 blkio throttle, and etcd's fsync figures.

:class:`DataDisk` makes sure a directory sits on a real block device (it keeps the
directory's own device when there is one, else mounts a fresh ext4 loop device on
it) and names the whole-disk ``MAJ:MIN`` to throttle. :class:`Throttle` moves one
process into a blkio cgroup of its own and limits its writes to that device to a
few IOPS (``blkio.throttle.write_iops_device``), so each fsync takes 100 ms or more.
Both undo everything on exit (throttle rule, cgroup, mount, loop device), also when
the scenario fails. :func:`unavailable` says why this cannot work here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

BLKIO = Path("/sys/fs/cgroup/blkio")
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the blkio throttle needs root"
    if not (BLKIO / "blkio.throttle.write_iops_device").exists():
        return f"no cgroup v1 blkio throttle at {BLKIO}"
    return None


def _run(*cmd: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip()


def whole_disk(dev: int) -> str | None:
    """``MAJ:MIN`` of the disk holding device number ``dev`` (a partition's parent),
    or ``None`` when it is no block device (overlay, tmpfs: major 0)."""
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if os.major(dev) == 0 or not sys_dev.exists():
        return None
    real = sys_dev.resolve()
    if (real / "partition").exists():
        real = real.parent
    return (real / "dev").read_text().strip()


class DataDisk:
    """``path`` on a real block device; :attr:`device` is the ``MAJ:MIN`` to throttle.

    ``force_loop`` mounts a loop device even when ``path`` is on a block device.
    """

    def __init__(self, path: Path, *, size_mb: int = 1024, force_loop: bool = False) -> None:
        self.path = path
        self.size_mb = size_mb
        self.force_loop = force_loop
        self.device = ""
        self.how = ""
        self.loop: str | None = None
        self.image = path.with_name(path.name + ".img")
        self.mounted = False

    def __enter__(self) -> Self:
        self.path.mkdir(parents=True, exist_ok=True)
        disk = None if self.force_loop else whole_disk(self.path.stat().st_dev)
        if disk is not None:
            self.device = disk
            self.how = f"data dir on the host's block device {disk}"
            return self
        try:
            with open(self.image, "wb") as f:
                f.truncate(self.size_mb << 20)
            _run("mkfs.ext4", "-q", "-F", str(self.image))
            self.loop = _run("losetup", "-f", "--show", str(self.image))
            _run("mount", self.loop, str(self.path))
            self.mounted = True
            self.device = whole_disk(self.path.stat().st_dev) or ""
            self.how = f"data dir on loop device {self.loop} ({self.device}), ext4"
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.mounted:
            done = subprocess.run(["umount", str(self.path)], capture_output=True, check=False)
            if done.returncode != 0:  # still busy (a member that would not die): detach
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False
        if self.loop is not None:
            subprocess.run(["losetup", "-d", self.loop], capture_output=True, check=False)
            self.loop = None
        self.image.unlink(missing_ok=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Throttle:
    """Process ``pid`` alone in a new blkio cgroup, its writes to ``device`` limited
    to ``iops``; :meth:`close` lifts the limit, puts it back and removes the cgroup."""

    def __init__(self, pid: int, device: str, iops: int) -> None:
        self.pid = pid
        self.device = device
        self.iops = iops
        self.cgroup = BLKIO / f"etcron-chaos-{os.getpid()}"
        self.home = BLKIO / self._current()

    def _current(self) -> str:
        for line in Path(f"/proc/{self.pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "blkio" in controllers.split(","):
                return path.lstrip("/")
        return ""

    def __enter__(self) -> Self:
        self.cgroup.mkdir(exist_ok=True)
        try:
            (self.cgroup / "blkio.throttle.write_iops_device").write_text(
                f"{self.device} {self.iops}"
            )
            (self.cgroup / "cgroup.procs").write_text(str(self.pid))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        rule = self.cgroup / "blkio.throttle.write_iops_device"
        with contextlib.suppress(OSError):
            rule.write_text(f"{self.device} 0")  # 0 removes the rule
        with contextlib.suppress(OSError):  # back home, if it still lives
            for pid in (self.cgroup / "cgroup.procs").read_text().split():
                (self.home / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.cgroup.rmdir()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# etcd's histograms ------------------------------------------------------------------


def histogram(client_url: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts (``le`` -> count, ``inf`` included) of one histogram
    from a member's ``/metrics``."""
    with _HTTP.open(f"{client_url}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: dict[float, float] = {}
    pat = re.compile(rf'^{re.escape(name)}_bucket\{{le="([^"]+)"\}} (\S+)$')
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            out[float(m[1])] = float(m[2])
    return out


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of the observations between two snapshots (linear within a
    bucket, as Prometheus' ``histogram_quantile``); ``None`` without observations."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lo, below = 0.0, 0.0
    for b, c in zip(bounds, counts, strict=True):
        if c >= rank:
            if b == float("inf"):
                return lo
            return lo + (b - lo) * ((rank - below) / (c - below) if c > below else 1.0)
        lo, below = b, c
    return None


def observations(before: dict[float, float], after: dict[float, float]) -> int:
    return int(after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0))


def loop_tools() -> str | None:
    """Why a loop device cannot be made, or ``None``."""
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing"
    return None

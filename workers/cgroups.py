"""Per-run resource limits (a job's ``resources``) through the kernel's cgroups.

Rules:

- Each attempt of a job with ``resources`` gets its own cgroup, named after the
  run id, created before the process starts and removed after it ended (its
  leftover processes are killed first). The process enters the cgroup itself
  before it execs the job (a ``sh`` wrapper writes its pid into ``cgroup.procs``),
  so every descendant is inside from its first instruction; none can fork out
  of it before it is moved.
- cgroup v2 (``/sys/fs/cgroup`` is a cgroup2 mount with the ``memory``, ``pids``
  and ``cpu`` controllers): ``memory.max``, ``memory.swap.max`` = 0,
  ``pids.max``, ``cpu.max``; runs live under ``worker.cgroup_root`` (default
  ``/sys/fs/cgroup/etcron``). cgroup v1 (separate ``memory``, ``pids`` and
  ``cpu`` hierarchies, as on this project's test machines):
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap
  accounting exists), ``pids.max``, ``cpu.cfs_quota_us``; runs live under
  ``<hierarchy>/etcron``.
- An OOM kill is read from the cgroup (``memory.events`` ``oom_kill`` on v2,
  ``memory.oom_control`` ``oom_kill`` on v1) and reported in the run record.
- A host where neither works (no controllers, not writable) runs no job that
  asks for ``resources``: the record says why (a limit that is not enforced is
  not a limit).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
_WRAPPER = (
    'p=$$; while [ "$1" != -- ]; do echo "$p" > "$1" || exit 125; shift; done; shift; exec "$@"'
)


@dataclass(frozen=True)
class Limits:
    memory: int | None = None
    """Bytes."""
    cpu: float | None = None
    """Cores (0.5: half of one core)."""
    pids: int | None = None


class RunCgroup:
    """One attempt's cgroup (one directory per hierarchy on v1, one on v2)."""

    def __init__(self, dirs: list[Path], version: int) -> None:
        self.dirs = dirs
        self.version = version

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` behind the wrapper that moves the process in before exec."""
        procs = [str(d / "cgroup.procs") for d in self.dirs]
        return ["/bin/sh", "-c", _WRAPPER, "etcron-cgroup", *procs, "--", *argv]

    def allow(self, uid: int, gid: int) -> None:
        """A run-as process moves itself: its user must be able to write ``cgroup.procs``."""
        for d in self.dirs:
            os.chown(d / "cgroup.procs", uid, gid)

    def oom_kills(self) -> int:
        for d in self.dirs:
            name = "memory.events" if self.version == 2 else "memory.oom_control"
            path = d / name
            if path.exists():
                for line in path.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return sorted(out)

    def remove(self) -> None:
        """Kill what is left inside, then remove the directories (best effort, bounded)."""
        for _ in range(50):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


class CgroupHost:
    """What this host offers; :meth:`detect` finds it, :meth:`create` makes a run's cgroup."""

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self.bases = bases
        """controller -> the directory runs are created under (one for all on v2)."""

    @classmethod
    def detect(cls, root: Path | None = None) -> tuple[CgroupHost | None, str]:
        """The host's cgroups, or (None, why not)."""
        v2 = root or V2_ROOT
        controllers = v2 / "cgroup.controllers"
        if root is not None or controllers.exists():
            try:
                have = set(controllers.read_text().split()) if controllers.exists() else set()
                base = root or V2_ROOT / "etcron"
                if not {"memory", "pids", "cpu"} <= have:
                    raise OSError(f"{v2} lacks the memory, pids or cpu controller")
                base.mkdir(exist_ok=True)
                (base.parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
                (base / "cgroup.subtree_control").write_text("+memory +pids +cpu")
                return cls(2, {"memory": base, "pids": base, "cpu": base}), ""
            except OSError as exc:
                if root is not None:
                    return None, f"cgroup v2 at {v2}: {exc}"
        bases = {}
        for ctrl in ("memory", "pids", "cpu"):
            hierarchy = V1_ROOT / ctrl
            if not (hierarchy / "cgroup.procs").exists():
                return None, f"no cgroup v2 controllers and no cgroup v1 {ctrl} hierarchy"
            try:
                (hierarchy / "etcron").mkdir(exist_ok=True)
            except OSError as exc:
                return None, f"cgroup v1 {ctrl}: cannot create {hierarchy / 'etcron'}: {exc}"
            bases[ctrl] = hierarchy / "etcron"
        return cls(1, bases), ""

    def create(self, name: str, limits: Limits) -> RunCgroup:
        """A fresh cgroup for one attempt, with ``limits`` set; OSError if it cannot be."""
        if self.version == 2:
            d = self.bases["memory"] / name
            d.mkdir()
            cg = RunCgroup([d], 2)
            try:
                if limits.memory is not None:
                    (d / "memory.max").write_text(str(limits.memory))
                    with contextlib.suppress(OSError):
                        (d / "memory.swap.max").write_text("0")
                if limits.pids is not None:
                    (d / "pids.max").write_text(str(limits.pids))
                if limits.cpu is not None:
                    quota = max(1000, int(limits.cpu * CPU_PERIOD_US))
                    (d / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            except OSError:
                cg.remove()
                raise
            return cg
        wanted = {
            "memory": limits.memory is not None,
            "pids": limits.pids is not None,
            "cpu": limits.cpu is not None,
        }
        dirs = []
        try:
            for ctrl, on in wanted.items():
                if not on:
                    continue
                d = self.bases[ctrl] / name
                d.mkdir()
                dirs.append(d)
                if ctrl == "memory":
                    (d / "memory.limit_in_bytes").write_text(str(limits.memory))
                    with contextlib.suppress(OSError):  # no swap accounting: memory only
                        (d / "memory.memsw.limit_in_bytes").write_text(str(limits.memory))
                elif ctrl == "pids":
                    (d / "pids.max").write_text(str(limits.pids))
                else:
                    assert limits.cpu is not None
                    (d / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                    quota = max(1000, int(limits.cpu * CPU_PERIOD_US))
                    (d / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError:
            RunCgroup(dirs, 1).remove()
            raise
        return RunCgroup(dirs, 1)

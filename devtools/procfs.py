"""What ``/proc`` says about a process: for tests and benchmarks that watch
worker processes, their guards and their children (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, ... (None: gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(entry))
    return out


def cmdline(pid: int) -> bytes:
    """The process's argv, NUL-separated (empty once it is gone or a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def running(pid: int) -> bool:
    """The process exists and is not a zombie (which still answers ``kill(pid, 0)``)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def guards_of(worker_pid: int) -> list[int]:
    """The worker's guard processes (its children running ``-m workers.guard_sidecar``)."""
    return [c for c in children_of(worker_pid) if b"workers.guard_sidecar" in cmdline(c)]

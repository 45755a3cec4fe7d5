"""Processes a run leaves behind end with the run.

A run's child gets its own session, and a stop signals that process group. A job
that starts ``setsid sleep 300 &`` (or double-forks) puts the sleep in a group
of its own, outside that reach: the run ends ``succeeded`` and the sleep runs on,
outside the no-overlap and lease-loss guarantees.

So the worker makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``):
a process orphaned anywhere below it is re-parented to the worker instead of
init. Every ``INTERVAL`` seconds the worker looks at its own children
(``/proc/self/task/*/children``):

- a child that is the main process of a run in progress is left alone (the
  executor waits for it);
- a child whose environment names a run (``ETCRON_RUN_ID``, which every run's
  processes inherit) that is no longer in progress is an orphan of that run:
  its process group is killed (SIGKILL) and it is reaped;
- a child that has already exited (a zombie) is reaped if it came from a run:
  it was seen with a run's environment, or it is in the session of a run's
  main process (the ``cmd &`` of a shell).

So a background process outlives its run by at most ``INTERVAL`` seconds. Not
covered: a process that clears its environment *and* detaches, or one whose
parent inside the run is still alive (it is not yet the worker's child; it is
caught once that parent is gone), or a ``setsid`` process that exits before
a sweep saw it (its zombie stays until the worker exits). Only ``etcron
worker`` (``workers.daemon``) turns this on: a process that embeds workers (the
tests) keeps its own children to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections import Counter, deque
from pathlib import Path

import structlog

log = structlog.get_logger("etcron.worker")

PR_SET_CHILD_SUBREAPER = 36
INTERVAL = 0.5

_runs: Counter[str] = Counter()
"""Runs in progress in this process."""
_mains: set[int] = set()
"""Main processes of runs in progress (the executor reaps them)."""
_sessions: set[int] = set()
_session_order: deque[int] = deque()
"""Sessions of recent runs' main processes (a run's child is its session leader)."""
_seen: dict[int, str] = {}
"""Children seen alive with a run's environment: pid -> run id."""
KEEP_SESSIONS = 4096
_task: asyncio.Task[None] | None = None
killed = 0
"""Orphans killed so far (for tests and logs)."""


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def run_started(run_id: str) -> None:
    _runs[run_id] += 1


def run_ended(run_id: str) -> None:
    _runs[run_id] -= 1
    if _runs[run_id] <= 0:
        del _runs[run_id]


def main_started(pid: int) -> None:
    _mains.add(pid)
    _sessions.add(pid)
    _session_order.append(pid)
    if len(_session_order) > KEEP_SESSIONS:
        _sessions.discard(_session_order.popleft())


def main_ended(pid: int) -> None:
    _mains.discard(pid)


def start() -> None:
    """Become a subreaper and start the sweep (once per process)."""
    global _task
    if _task is not None and not _task.done():
        return
    if not become_subreaper():
        log.warning("cannot become a child subreaper: background processes may outlive runs")
        return
    _task = asyncio.get_running_loop().create_task(_loop())


async def _loop() -> None:
    while True:
        await asyncio.sleep(INTERVAL)
        try:
            sweep()
        except Exception as exc:  # never let the sweep take a worker down
            log.warning("orphan sweep failed", error=repr(exc))


def _children() -> set[int]:
    out: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            out.update(int(p) for p in (task / "children").read_text().split())
    return out


def _stat(pid: int) -> tuple[str, int]:
    """(state, session) from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[3])


def _run_of(pid: int) -> str | None:
    env = Path(f"/proc/{pid}/environ").read_bytes()
    for item in env.split(b"\0"):
        if item.startswith(b"ETCRON_RUN_ID="):
            return item[len(b"ETCRON_RUN_ID=") :].decode(errors="replace")
    return None


def sweep() -> int:
    """Kill and reap the orphans of ended runs, reap exited ones; how many killed."""
    global killed
    n = 0
    children = _children() - _mains
    for pid in list(_seen):
        if pid not in children:
            del _seen[pid]  # gone (reaped)
    for pid in children:
        try:
            state, session = _stat(pid)
            if state == "Z":
                if pid in _seen or session in _sessions:
                    _reap(pid)
                continue
            run = _run_of(pid)
        except (OSError, ValueError, IndexError):
            continue
        if run is None:
            continue
        _seen[pid] = run
        if run in _runs:
            continue
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        n += 1
        log.warning("killed a process left behind by an ended run", run=run, pid=pid)
    killed += n
    return n


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)

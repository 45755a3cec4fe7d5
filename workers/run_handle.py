"""A run this worker holds a claim for, and how it ended in words.

The handle is shared by the claimer (which makes it), the runner (which runs and
ends it), the session loop and the kill/replace watches (which stop it) and the
metrics (which observe it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.etcd.claim_txn import Handed, HandOver
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from workers.executor import Child, StopReason

NextRun = tuple[HandOver, Callable[[Handed], None]]
"""The next tick's claim to send with a release, and what to do with the answer."""


class RunObserver(Protocol):
    """Told when a scheduled run is exec'd at its tick and when a run ended
    (``workers.metrics``); both must be quick and must not raise."""

    def run_started(self, h: RunHandle) -> None: ...

    def run_ended(self, h: RunHandle) -> None: ...


@dataclass
class RunHandle:
    """A run this worker holds a claim for."""

    job: JobSpec
    record: RunRecord
    lock_key: str
    record_key: str
    token: int
    child: Child | None = None
    stop_reason: StopReason | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    exec_at: float | None = None
    """Cluster time (seconds) of the first exec at the tick (``RunObserver.run_started``)."""

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def stop(self, reason: StopReason, *, now: bool = False) -> None:
        if self.stop_reason is None or reason is StopReason.LOST:
            self.stop_reason = reason
        self.stopped.set()
        if self.child is not None:
            self.child.stop(reason, now=now)


def final_status(h: RunHandle, exit_code: int | None, error: str) -> RunStatus:
    """The final status of a run from why it stopped and how its last attempt ended."""
    if h.stop_reason is StopReason.LOST:
        return RunStatus.LOST
    if h.stop_reason in (StopReason.KILLED, StopReason.DRAIN):
        return RunStatus.KILLED
    if h.stop_reason is StopReason.TIMEOUT:
        return RunStatus.TIMED_OUT
    return RunStatus.SUCCEEDED if exit_code == 0 and not error else RunStatus.FAILED


def lost_message(h: RunHandle) -> str:
    """The message of a run that ended because the session was lost ("" otherwise)."""
    if h.stop_reason is StopReason.LOST:
        return "the worker's session lease ran out while the run was active; its child was killed"
    return ""

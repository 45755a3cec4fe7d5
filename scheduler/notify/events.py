"""Which notification events a run record raises: pure functions and a small state.

Rules:

- ``failed``: the record is final and ``failed``, ``timed_out``, ``killed`` or
  ``lost``. ``succeeded``: final and ``succeeded``. ``missed``: a ``missed``
  record. ``skipped`` records raise nothing.
- ``recovered``: a success whose job's previous final record (by run id, so by
  tick; ``skipped`` ones not counted) was a failure or a miss.
- ``late``: a scheduled run (not a manual one) that started more than the
  rule's ``late`` after its tick.
- ``overran``: a run still running more than the rule's ``overran`` after its
  start (checked on a timer: :meth:`EventState.overrunning`), or one that ended
  after running longer than that.
- Each (job, run, event, sink) is delivered at most once: the caller keys the
  delivery by it, so a record seen twice (``running`` then final, a watch
  resumed, a new leader's first list) never notifies twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from scheduler.notify.rules import Event, NotifyRule
from scheduler.runs import RunRecord, RunStatus

FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.KILLED, RunStatus.LOST})
BAD = FAILURES | {RunStatus.MISSED}
"""A success after one of these is ``recovered``."""
MAX_RUNNING = 100_000
"""Running runs tracked for ``overran`` at most (a bound on memory)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One event of one run, for one rule's sink."""

    event: Event
    rule: NotifyRule
    record: RunRecord

    @property
    def job(self) -> str:
        return self.record.job


def raised(
    rec: RunRecord, rule: NotifyRule, *, previous_bad: bool | None, now: datetime
) -> list[Event]:
    """The events of ``rule.on`` that ``rec`` raises (``previous_bad``: was the job's
    previous final record a failure or a miss; None when unknown)."""
    out: list[Event] = []
    status = rec.status
    if status in FAILURES:
        out.append(Event.FAILED)
    elif status is RunStatus.SUCCEEDED:
        out.append(Event.SUCCEEDED)
        if previous_bad:
            out.append(Event.RECOVERED)
    elif status is RunStatus.MISSED:
        out.append(Event.MISSED)
    lag = (rec.start - rec.tick).total_seconds() if rec.start is not None else None
    if rule.late is not None and lag is not None and not rec.manual and lag > rule.late:
        out.append(Event.LATE)
    if rule.overran is not None and rec.start is not None:
        end = rec.end if status.final else now
        if end is not None and (end - rec.start).total_seconds() > rule.overran:
            out.append(Event.OVERRAN)
    return [e for e in out if e in rule.on]


class EventState:
    """What the events need to remember: each job's last final record (for
    ``recovered``) and the runs still running (for ``overran`` on a timer)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, bool]] = {}
        self.running: dict[tuple[str, str], RunRecord] = {}

    def reset(self) -> None:
        self._last.clear()
        self.running.clear()

    def see(self, rec: RunRecord) -> bool | None:
        """Take ``rec`` in; return whether the job's previous final record was bad
        (None: no earlier one known, or ``rec`` is older than the last one seen)."""
        key = (rec.job, rec.run_id)
        if rec.status is RunStatus.RUNNING:
            if rec.start is not None and (key in self.running or len(self.running) < MAX_RUNNING):
                self.running[key] = rec
            return None
        self.running.pop(key, None)
        if rec.status is RunStatus.SKIPPED:
            return None
        last = self._last.get(rec.job)
        if last is not None and rec.run_id < last[0]:
            return None
        previous = last[1] if last is not None and rec.run_id != last[0] else None
        if last is not None and rec.run_id == last[0]:
            return None  # the same record again
        self._last[rec.job] = (rec.run_id, rec.status in BAD)
        return previous

    def forget(self, job: str, run_id: str) -> None:
        self.running.pop((job, run_id), None)

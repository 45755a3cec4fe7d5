"""The runs a worker holds, and the claims it has in flight.

``RunSet`` owns the answer to "is this worker full?": a run counts from the
moment it is added (before its child starts, or when a hand-over wins it) until
it is removed, and a claim counts while its transaction is in flight, so two
ticks due at once cannot both pass the capacity check and overfill the worker.

Rules:

- ``full()`` is ``len(runs) + claims in flight >= capacity``; ``room_after_one()``
  is the same with one run about to end (the hand-over asks it).
- ``claiming()`` is a context manager: a claim counts inside it, whatever it
  raises.
- ``stop_all(reason)`` stops every run held (the runs end, and remove
  themselves, on their own tasks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from workers.executor import StopReason
from workers.runner import RunHandle


class RunSet:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._runs: dict[str, RunHandle] = {}
        self._claims = 0

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[RunHandle]:
        return iter(list(self._runs.values()))

    def values(self) -> list[RunHandle]:
        """The runs held now (a copy: safe to iterate while runs end)."""
        return list(self._runs.values())

    def get(self, run_id: str) -> RunHandle | None:
        return self._runs.get(run_id)

    def add(self, h: RunHandle) -> None:
        self._runs[h.run_id] = h

    def remove(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def of_job(self, name: str) -> list[RunHandle]:
        return [h for h in self._runs.values() if h.job.name == name]

    @property
    def in_flight(self) -> int:
        """Claims sent and not yet answered."""
        return self._claims

    def full(self) -> bool:
        return len(self._runs) + self._claims >= self.capacity

    def room_after_one(self) -> bool:
        """Is there room once one of the runs held ends (a hand-over's question)?"""
        return len(self._runs) - 1 + self._claims < self.capacity

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        self._claims += 1
        try:
            yield
        finally:
            self._claims -= 1

    def stop_all(self, reason: StopReason, *, now: bool = False) -> list[RunHandle]:
        """Stop every run held; returns them."""
        runs = self.values()
        for h in runs:
            h.stop(reason, now=now)
        return runs

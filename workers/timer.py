"""The fire-time heap.

One entry per job: (next fire in epoch ms, job name, generation). Popping a due
entry costs O(log n); nothing scans all jobs. Changing or removing a job bumps
its generation, so stale entries are dropped when they reach the top (lazy
deletion) instead of being searched for.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class _Entry:
    fire_ms: int
    name: str = field(compare=True)
    generation: int = field(compare=False)


class Timer:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._gen: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._gen)

    def schedule(self, name: str, fire_ms: int) -> None:
        """Set (or replace) the next fire time of ``name``."""
        gen = self._gen.get(name, 0) + 1
        self._gen[name] = gen
        heapq.heappush(self._heap, _Entry(fire_ms, name, gen))
        if len(self._heap) > 4 * len(self._gen) + 64:
            self._compact()

    def remove(self, name: str) -> None:
        self._gen.pop(name, None)

    def _live(self, entry: _Entry) -> bool:
        return self._gen.get(entry.name) == entry.generation

    def _drop_stale(self) -> None:
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)

    def next_fire_ms(self) -> int | None:
        self._drop_stale()
        return self._heap[0].fire_ms if self._heap else None

    def pop_due(self, now_ms: int) -> list[tuple[str, int]]:
        """Every (name, fire_ms) due at ``now_ms``; popped entries are not rescheduled."""
        due: list[tuple[str, int]] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0].fire_ms > now_ms:
                return due
            entry = heapq.heappop(self._heap)
            del self._gen[entry.name]
            due.append((entry.name, entry.fire_ms))

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live(e)]
        heapq.heapify(self._heap)

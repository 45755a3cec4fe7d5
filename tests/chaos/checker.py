"""Reads a chaos ledger and the recorded fault windows; counts what went wrong.

A ledger line is ``job tick run-id token worker kind at`` (see ``ledger.py``).
A run's span is [its first line, its last line]: every line (``start``, ``beat``,
``end``, or a ``rejected:`` one) proves the run was alive when it was written, and
a killed run writes nothing after it died.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Line:
    job: str
    tick: float  # epoch seconds
    run_id: str
    token: int
    worker: str
    kind: str
    at: float

    @property
    def is_start(self) -> bool:
        return self.kind in ("start", "rejected:start")


@dataclass
class Fault:
    """A fault held from ``start`` to ``end`` (epoch seconds). Ticks up to
    ``end + settle`` count as inside it (the time the system needs to recover)."""

    label: str
    start: float
    end: float = math.inf
    settle: float = 0.0

    def covers(self, t: float) -> bool:
        return self.start - 0.5 <= t <= self.end + self.settle


@dataclass
class Report:
    ticks_checked: int = 0
    runs: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    overlaps: list[tuple[str, str, str]] = field(default_factory=list)
    misses_outside: list[tuple[str, str]] = field(default_factory=list)
    misses_inside: list[tuple[str, str]] = field(default_factory=list)
    rejected: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "ticks_checked": self.ticks_checked,
            "runs": self.runs,
            "duplicates": len(self.duplicates),
            "overlaps": len(self.overlaps),
            "misses_outside": len(self.misses_outside),
            "misses_inside": len(self.misses_inside),
            "rejected": self.rejected,
        }

    def details(self) -> dict[str, object]:
        return asdict(self)


def parse_tick(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def show_tick(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def read(path: Path) -> list[Line]:
    if not path.exists():
        return []
    out = []
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) != 7:
            continue
        try:
            out.append(
                Line(
                    parts[0],
                    parse_tick(parts[1]),
                    parts[2],
                    int(parts[3]),
                    parts[4],
                    parts[5],
                    float(parts[6]),
                )
            )
        except ValueError:
            continue
    return out


def spans(lines: list[Line]) -> dict[str, dict[str, tuple[float, float]]]:
    """job -> run id -> (first line, last line)."""
    out: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for e in lines:
        a, b = out[e.job].get(e.run_id, (e.at, e.at))
        out[e.job][e.run_id] = (min(a, e.at), max(b, e.at))
    return out


def starts(lines: list[Line]) -> dict[tuple[str, float], list[Line]]:
    out: dict[tuple[str, float], list[Line]] = defaultdict(list)
    for e in lines:
        if e.is_start:
            out[(e.job, round(e.tick, 3))].append(e)
    return out


def check(
    lines: list[Line],
    *,
    window: tuple[float, float],
    every_second: list[str],
    faults: list[Fault] = (),  # type: ignore[assignment]
    forbid: list[str] | None = None,
) -> Report:
    """``every_second``: jobs expected to start at each whole second of ``window``
    (its first and last second excepted). ``forbid``: jobs whose runs must not
    overlap (default: every job in the ledger)."""
    rep = Report()
    by_tick = starts(lines)
    rep.runs = len({(e.job, e.run_id) for e in lines})
    rep.rejected = sum(1 for e in lines if e.kind.startswith("rejected:"))
    for (job, tick), ss in sorted(by_tick.items()):
        if len({e.run_id for e in ss}) > 1:
            rep.duplicates.append((job, show_tick(tick)))
    for job, runs in spans(lines).items():
        if forbid is not None and job not in forbid:
            continue
        latest_end, latest_run = -math.inf, ""
        for run_id, (a, b) in sorted(runs.items(), key=lambda kv: kv[1][0]):
            if a < latest_end:
                rep.overlaps.append((job, latest_run, run_id))
            if b > latest_end:
                latest_end, latest_run = b, run_id
    lo, hi = math.ceil(window[0]) + 1, math.floor(window[1]) - 1
    for job in every_second:
        for sec in range(lo, hi + 1):
            rep.ticks_checked += 1
            if (job, float(sec)) in by_tick:
                continue
            miss = (job, show_tick(sec))
            if any(f.covers(sec) for f in faults):
                rep.misses_inside.append(miss)
            else:
                rep.misses_outside.append(miss)
    return rep


def gaps(lines: list[Line], job: str, lo: float, hi: float) -> float:
    """The longest time between consecutive started ticks of ``job`` in [lo, hi],
    minus the 1 s period (0 when every second started)."""
    ticks = sorted({e.tick for e in lines if e.job == job and e.is_start and lo <= e.tick <= hi})
    if len(ticks) < 2:
        return math.inf
    return max(b - a for a, b in itertools.pairwise(ticks)) - 1.0

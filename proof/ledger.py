"""The run ledger: one line format, one reader, one checker (standard library only).

Every job that proves "once per tick" appends lines to a ledger file, one line per
``O_APPEND`` write, so lines never interleave::

    job tick run-id token worker kind at

``job``, ``tick`` (``$ETCRON_TICK``: ISO UTC, milliseconds, ``Z``), ``run-id``
(``$ETCRON_RUN_ID``), ``token`` (``$ETCRON_FENCING_TOKEN``, 0 when there is none),
``worker`` (``$ETCRON_WORKER``), ``kind`` (``start``, ``beat``, ``end``, or
``rejected:<kind>`` for a write a fenced ledger refused) and ``at`` (the writer's
wall clock, epoch seconds). Writers: :data:`SHELL_LINE` (the tests' and the
benchmarks' shell jobs), ``bench/body/ledger_append.c``, ``bench/peers/common.py``
and the fenced ``tests/chaos/ledger.py``.

The checker:

- a *duplicate* is a (job, tick) started by more than one run;
- an *overlap* is two runs of one job alive at the same time, a run's span being
  [its first line, its last line]: every line proves the run was alive when it
  was written, and a killed run writes nothing after it died;
- a *miss* is an expected (job, tick) that no run started.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

SHELL_LINE = (
    "printf '%s %s %s %s %s {kind} %s\\n' "
    '"$ETCRON_JOB" "$ETCRON_TICK" "$ETCRON_RUN_ID" "${{ETCRON_FENCING_TOKEN:-0}}" '
    '"$ETCRON_WORKER" "$(date +%s.%N)"'
)
"""One ``printf`` of a ledger line (``.format(kind=...)``, then append ``>> LEDGER``)."""


def shell_line(kind: str = "start") -> str:
    """The shell command that writes one ledger line of ``kind`` to stdout."""
    return SHELL_LINE.format(kind=kind)


@dataclass(frozen=True, slots=True)
class Line:
    job: str
    tick: float  # epoch seconds
    run_id: str
    token: int
    worker: str
    kind: str
    at: float
    tick_iso: str = ""  # the tick as written

    @property
    def is_start(self) -> bool:
        return self.kind in ("start", "rejected:start")

    @property
    def tick_ms(self) -> int:
        return round(self.tick * 1000)

    @property
    def lag_ms(self) -> float:
        return self.at * 1000 - self.tick_ms


def parse_tick(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def show_tick(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def parse_line(text: str) -> Line | None:
    parts = text.split()
    if len(parts) != 7:
        return None
    try:
        return Line(
            parts[0],
            parse_tick(parts[1]),
            parts[2],
            int(parts[3]),
            parts[4],
            parts[5],
            float(parts[6]),
            parts[1],
        )
    except ValueError:
        return None


def read(path: Path) -> list[Line]:
    """The ledger's well-formed lines (a torn or foreign line is skipped)."""
    if not path.exists():
        return []
    with open(path, errors="replace") as f:
        return [x for x in map(parse_line, f) if x is not None]


def starts(lines: Iterable[Line]) -> dict[tuple[str, int], list[Line]]:
    """(job, tick in ms) -> its start lines."""
    out: dict[tuple[str, int], list[Line]] = defaultdict(list)
    for e in lines:
        if e.is_start:
            out[(e.job, e.tick_ms)].append(e)
    return out


def duplicates(lines: Iterable[Line]) -> dict[tuple[str, int], int]:
    """(job, tick in ms) -> how many runs started it, for ticks started more than once."""
    out = {}
    for key, ss in starts(lines).items():
        runs = len({e.run_id for e in ss})
        if runs > 1:
            out[key] = runs
    return out


def spans(lines: Iterable[Line]) -> dict[str, dict[str, tuple[float, float]]]:
    """job -> run id -> (first line, last line)."""
    out: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for e in lines:
        a, b = out[e.job].get(e.run_id, (e.at, e.at))
        out[e.job][e.run_id] = (min(a, e.at), max(b, e.at))
    return out


def overlaps(
    lines: Iterable[Line], jobs: Iterable[str] | None = None
) -> list[tuple[str, str, str]]:
    """(job, earlier run, later run) for each run that started while an earlier run of
    the same job was still alive. ``jobs``: only these (default: every job)."""
    only = None if jobs is None else set(jobs)
    bad = []
    for job, runs in spans(lines).items():
        if only is not None and job not in only:
            continue
        latest_end, latest_run = -math.inf, ""
        for run_id, (a, b) in sorted(runs.items(), key=lambda kv: kv[1][0]):
            if a < latest_end:
                bad.append((job, latest_run, run_id))
            if b > latest_end:
                latest_end, latest_run = b, run_id
    return bad


def unfinished(lines: Iterable[Line]) -> int:
    """Runs with a start line and no end line (killed, or still running at the end)."""
    started, ended = set(), set()
    for e in lines:
        if e.is_start:
            started.add((e.job, e.run_id))
        elif e.kind in ("end", "rejected:end"):
            ended.add((e.job, e.run_id))
    return len(started - ended)


def misses(
    lines: Iterable[Line], jobs: Sequence[str], ticks: Iterable[int]
) -> list[tuple[str, int]]:
    """The (job, tick in whole seconds) of ``jobs`` x ``ticks`` that no run started."""
    seen = set(starts(lines))
    return [(j, t) for j in jobs for t in ticks if (j, t * 1000) not in seen]


def gaps(lines: Iterable[Line], job: str, lo: float, hi: float) -> float:
    """The longest time between consecutive started ticks of ``job`` in [lo, hi],
    minus the 1 s period (0 when every second started; inf with fewer than 2)."""
    ticks = sorted({e.tick for e in lines if e.job == job and e.is_start and lo <= e.tick <= hi})
    if len(ticks) < 2:
        return math.inf
    return max(b - a for a, b in itertools.pairwise(ticks)) - 1.0


# --------------------------------------------------------------------------- faults


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


def check(
    lines: list[Line],
    *,
    window: tuple[float, float],
    every_second: list[str],
    faults: Sequence[Fault] = (),
    forbid: list[str] | None = None,
) -> Report:
    """The whole check over a window of epoch seconds. ``every_second``: jobs
    expected to start at each whole second of ``window`` (its first and last second
    excepted); a miss inside a fault (:meth:`Fault.covers`) is counted apart.
    ``forbid``: jobs whose runs must not overlap (default: every job in the ledger)."""
    rep = Report()
    rep.runs = len({(e.job, e.run_id) for e in lines})
    rep.rejected = sum(1 for e in lines if e.kind.startswith("rejected:"))
    rep.duplicates = [(job, show_tick(t / 1000)) for job, t in sorted(duplicates(lines))]
    rep.overlaps = overlaps(lines, forbid)
    ticks = range(math.ceil(window[0]) + 1, math.floor(window[1]))
    rep.ticks_checked = len(every_second) * len(ticks)
    for job, sec in misses(lines, every_second, ticks):
        miss = (job, show_tick(sec))
        if any(f.covers(sec) for f in faults):
            rep.misses_inside.append(miss)
        else:
            rep.misses_outside.append(miss)
    return rep

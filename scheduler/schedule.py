"""Schedules: cron expressions, macros and ``@every``, evaluated in a time zone.

Formats:

- 5 fields ``minute hour day-of-month month day-of-week`` (Vixie cron: when both
  day fields are restricted, a day matching *either* fires).
- 6 fields with **seconds first** (as Quartz and dkron): ``*/10 * * * * *``.
- ``@yearly @annually @monthly @weekly @daily @midnight @hourly``.
- ``@every <duration>`` (at least 1 s): fires at multiples of the interval since
  the Unix epoch, in UTC, so every worker computes the same ticks whatever its
  start time; the time zone does not matter.

Time zones and DST: the expression is evaluated on *local wall-clock* times of
the job's IANA zone, and each local time is mapped to UTC:

- a local time that does not exist (spring forward) fires **once, at the
  jump** — several skipped times collapse into that one fire;
- a local time that exists twice (fall back) fires **once, at its first
  occurrence**.

All times in and out are aware UTC datetimes; results are strictly increasing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from scheduler.durations import parse_duration

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MAX_STEPS = 2000


class ScheduleError(ValueError):
    pass


@lru_cache(maxsize=1024)
def validate_timezone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name like Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name like Europe/Berlin)"
        ) from exc


def _utc(tz: ZoneInfo) -> bool:
    return tz.key in ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Universal", "Zulu", "Etc/Zulu")


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """Map a naive local time to UTC by the DST rules of this module."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first  # exists (the first occurrence when ambiguous)
    second = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(first, second), max(first, second)
    after = hi.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):  # bisect the transition instant
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi


@dataclass(frozen=True, slots=True)
class Schedule:
    expr: str
    cron: str | None
    seconds: bool
    every: float | None

    @classmethod
    def parse(cls, expr: str) -> Schedule:
        return _parse(expr)

    def _iter(self, start: datetime) -> Any:
        it = _croniter(self.cron, self.seconds)
        it.set_current(start, force=True)
        return it

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """The first fire time strictly after ``after``."""
        if self.every is not None:
            step = self.every
            n = math.floor(after.timestamp() / step + 1e-9) + 1
            return datetime.fromtimestamp(n * step, UTC)
        if _utc(tz):
            it = self._iter(after.replace(tzinfo=None))
            return it.get_next(datetime).replace(tzinfo=UTC)  # type: ignore[no-any-return]
        it = self._iter(after.astimezone(tz).replace(tzinfo=None))
        for _ in range(_MAX_STEPS):
            cand = to_utc(it.get_next(datetime), tz)
            if cand > after:
                return cand
        raise ScheduleError(f"{self.expr!r}: no fire time found after {after.isoformat()}")

    def latest_at_or_before(self, t: datetime, tz: ZoneInfo) -> datetime | None:
        """The last fire time at or before ``t`` (None if none within a year)."""
        if self.every is not None:
            n = math.floor(t.timestamp() / self.every + 1e-9)
            return datetime.fromtimestamp(n * self.every, UTC)
        local = (t if _utc(tz) else t.astimezone(tz)).replace(tzinfo=None)
        it = self._iter(local + timedelta(seconds=1))
        floor = local - timedelta(days=370)
        for _ in range(_MAX_STEPS):
            prev = it.get_prev(datetime)
            if prev < floor:
                return None
            cand = prev.replace(tzinfo=UTC) if _utc(tz) else to_utc(prev, tz)
            if cand <= t:
                return cand
        return None

    def preview(self, after: datetime, tz: ZoneInfo, n: int) -> list[datetime]:
        out: list[datetime] = []
        for _ in range(n):
            after = self.next_after(after, tz)
            out.append(after)
        return out


@lru_cache(maxsize=4096)
def _croniter(cron: str | None, seconds: bool) -> Any:
    return croniter(cron, datetime(2000, 1, 1), day_or=True, second_at_beginning=seconds)


@lru_cache(maxsize=4096)
def _parse(expr: str) -> Schedule:
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(
            "expected a cron expression like '*/5 * * * *', '@daily' or '@every 10s'"
        )
    text = " ".join(expr.split())
    if text.lower().startswith("@every"):
        arg = text[len("@every") :].strip()
        try:
            every = parse_duration(arg)
        except ValueError as exc:
            raise ScheduleError(f"@every needs a duration like '@every 10s' (got {arg!r})") from exc
        if every < 1:
            raise ScheduleError(f"@every interval must be at least 1s (got {arg!r})")
        return Schedule(expr, None, False, every)
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ScheduleError(
                f"unknown macro {text!r} (expected one of {', '.join(MACROS)} or @every)"
            )
        text = MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"expected 5 fields (minute hour day month weekday) or 6 with seconds first, "
            f"got {len(fields)} in {expr!r}"
        )
    seconds = len(fields) == 6
    try:
        ok = croniter.is_valid(text, second_at_beginning=seconds)
    except Exception:
        ok = False
    if not ok:
        raise ScheduleError(f"invalid cron expression {expr!r}")
    try:
        _croniter(text, seconds).get_next(datetime)
    except Exception as exc:  # e.g. '0 0 30 2 *' never fires
        raise ScheduleError(f"cron expression {expr!r} never fires") from exc
    return Schedule(expr, text, seconds, None)

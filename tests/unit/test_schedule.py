"""Schedules: formats, Vixie day rule, @every, DST rules, and an oracle-checked property."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.schedule import Schedule, ScheduleError, to_utc, validate_timezone

BERLIN, NEW_YORK, LORD_HOWE = "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"


def z(text: str) -> datetime:
    """``"2026-03-29 01:00"`` (UTC) -> aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, zone: str, after: str, n: int) -> list[str]:
    out = Schedule.parse(expr).preview(z(after), ZoneInfo(zone), n)
    return [t.strftime("%Y-%m-%d %H:%M:%S") for t in out]


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    ["* * * * *", "*/5 * * * *", "0 0 13 * 5", "0 9-17 * * mon-fri", "*/10 * * * * *",
     "30 5 * * * *", "0 0 L * *", "0 0 * * 1#2", "@yearly", "@annually", "@monthly", "@weekly",
     "@daily", "@midnight", "@hourly", "@DAILY", "@every 1s", "@every 10s", "@every 1h30m",
     "@every 1.5s", "  */5   * * * *  "],
)  # fmt: skip
def test_parse_accepts(expr: str) -> None:
    s = Schedule.parse(expr)
    assert s.expr == expr
    assert s.next_after(z("2026-01-01 00:00"), ZoneInfo("UTC")) > z("2026-01-01 00:00")


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("", "expected 5 cron fields"),
        ("   ", "expected 5 cron fields"),
        ("* * * *", r"got 4 fields"),
        ("*", r"got 1 field in"),
        ("* * * * * * *", r"got 7 fields"),
        ("0 0 1 1 * 2026 x", r"got 7 fields"),
        ("61 * * * *", "invalid cron expression"),
        ("* 24 * * *", "invalid cron expression"),
        ("* * * 13 *", "invalid cron expression"),
        ("* * * * 8", "invalid cron expression"),
        ("*/0 * * * *", "invalid cron expression"),
        ("a b c d e", "invalid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("@often", "unknown macro '@often'"),
        ("@reboot", "unknown macro"),
        ("@every", "@every needs a duration"),
        ("@every soon", "@every needs a duration"),
        ("@every -5s", "@every needs a duration"),
        ("@every 500ms", "at least 1s"),
        ("@every 0s", "at least 1s"),
    ],
)
def test_parse_rejects(expr: str, match: str) -> None:
    with pytest.raises(ScheduleError, match=match):
        Schedule.parse(expr)


def test_schedule_error_is_value_error_and_parse_is_cached() -> None:
    assert issubclass(ScheduleError, ValueError)
    assert Schedule.parse("*/7 * * * *") is Schedule.parse("*/7 * * * *")
    assert Schedule.parse("@daily") != Schedule.parse("@midnight")


@pytest.mark.parametrize(
    ("name", "ok"),
    [("UTC", True), ("Europe/Berlin", True), ("Australia/Lord_Howe", True),
     ("Mars/Base", False), ("", False), ("../etc/passwd", False), ("/etc/localtime", False),
     ("Europe/", False)],
)  # fmt: skip
def test_validate_timezone(name: str, ok: bool) -> None:
    if ok:
        assert validate_timezone(name).key == name
    else:
        with pytest.raises(ValueError, match=r"unknown time zone .* \(expected an IANA name"):
            validate_timezone(name)


def test_naive_datetimes_are_rejected() -> None:
    s = Schedule.parse("* * * * *")
    with pytest.raises(ValueError, match="aware"):
        s.next_after(datetime(2026, 1, 1), ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="aware"):
        s.latest_at_or_before(datetime(2026, 1, 1), ZoneInfo("UTC"))


# -- next fire times in UTC --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", "2026-01-01 12:03:10", ["2026-01-01 12:05:00", "2026-01-01 12:10:00"]),
        ("*/5 * * * *", "2026-01-01 12:05:00", ["2026-01-01 12:10:00", "2026-01-01 12:15:00"]),
        ("*/10 * * * * *", "2026-01-01 12:00:03", ["2026-01-01 12:00:10", "2026-01-01 12:00:20"]),
        ("30 5 * * * *", "2026-01-01 12:06:00", ["2026-01-01 13:05:30", "2026-01-01 14:05:30"]),
        ("0 0 * * * *", "2026-01-01 23:59:59", ["2026-01-02 00:00:00", "2026-01-02 01:00:00"]),
        ("59 59 23 31 12 *", "2026-06-01 00:00", ["2026-12-31 23:59:59", "2027-12-31 23:59:59"]),
        ("@hourly", "2026-01-01 12:30", ["2026-01-01 13:00:00", "2026-01-01 14:00:00"]),
        ("@daily", "2026-01-01 12:30", ["2026-01-02 00:00:00", "2026-01-03 00:00:00"]),
        ("@midnight", "2026-01-01 00:00", ["2026-01-02 00:00:00", "2026-01-03 00:00:00"]),
        ("@weekly", "2026-01-01 12:30", ["2026-01-04 00:00:00", "2026-01-11 00:00:00"]),
        ("@monthly", "2026-01-15 00:00", ["2026-02-01 00:00:00", "2026-03-01 00:00:00"]),
        ("@yearly", "2026-01-01 00:00", ["2027-01-01 00:00:00", "2028-01-01 00:00:00"]),
        ("@annually", "2026-05-05 00:00", ["2027-01-01 00:00:00", "2028-01-01 00:00:00"]),
        ("0 0 29 2 *", "2026-01-01 00:00", ["2028-02-29 00:00:00", "2032-02-29 00:00:00"]),
        ("0 0 L * *", "2026-02-01 00:00", ["2026-02-28 00:00:00", "2026-03-31 00:00:00"]),
        ("0 9 * * mon-fri", "2026-01-02 10:00", ["2026-01-05 09:00:00", "2026-01-06 09:00:00"]),
        # Vixie cron: both day fields restricted -> either matches (13th OR Friday)
        ("0 0 13 * 5", "2026-04-01 00:00",
         ["2026-04-03 00:00:00", "2026-04-10 00:00:00", "2026-04-13 00:00:00",
          "2026-04-17 00:00:00"]),
        # only one day field restricted -> it alone decides
        ("0 0 13 * *", "2026-04-01 00:00", ["2026-04-13 00:00:00", "2026-05-13 00:00:00"]),
    ],
)  # fmt: skip
def test_next_fires_utc(expr: str, after: str, expected: list[str]) -> None:
    assert fires(expr, "UTC", after, len(expected)) == expected


@pytest.mark.parametrize("zone", ["UTC", BERLIN, LORD_HOWE, "Asia/Kolkata"])
@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("@every 1h", "2026-01-01 12:34:56", ["2026-01-01 13:00:00", "2026-01-01 14:00:00"]),
        ("@every 90s", "2026-01-01 00:00:10", ["2026-01-01 00:01:30", "2026-01-01 00:03:00"]),
        ("@every 10s", "2026-01-01 00:00:10", ["2026-01-01 00:00:20", "2026-01-01 00:00:30"]),
        ("@every 7s", "2026-01-01 00:00:00", ["2026-01-01 00:00:07", "2026-01-01 00:00:14"]),
        ("@every 1d", "2026-03-29 00:30:00", ["2026-03-30 00:00:00", "2026-03-31 00:00:00"]),
    ],
)
def test_every_is_epoch_aligned_and_zone_independent(
    zone: str, expr: str, after: str, expected: list[str]
) -> None:
    assert fires(expr, zone, after, 2) == expected
    step = Schedule.parse(expr).every
    assert step is not None
    for t in Schedule.parse(expr).preview(z(after), ZoneInfo(zone), 5):
        assert t.timestamp() % step == 0


def test_every_fractional_interval_has_exact_multiples() -> None:
    s = Schedule.parse("@every 1.5s")
    start = datetime.fromtimestamp(1_800_000_000.2, UTC)
    got = s.preview(start, ZoneInfo("UTC"), 3)
    assert [t.timestamp() for t in got] == [1_800_000_001.5, 1_800_000_003.0, 1_800_000_004.5]


def test_microseconds_in_after_are_handled() -> None:
    s = Schedule.parse("*/10 * * * * *")
    tz = ZoneInfo(BERLIN)
    assert s.next_after(z("2026-01-01 12:00:09.999999"), tz) == z("2026-01-01 12:00:10")
    assert s.next_after(z("2026-01-01 12:00:10.000001"), tz) == z("2026-01-01 12:00:20")
    assert s.latest_at_or_before(z("2026-01-01 12:00:19.999"), tz) == z("2026-01-01 12:00:10")


def test_preview_count_and_order() -> None:
    got = Schedule.parse("*/15 * * * *").preview(z("2026-01-01 00:00"), ZoneInfo(BERLIN), 10)
    assert len(got) == 10
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(got))
    assert Schedule.parse("@daily").preview(z("2026-01-01 00:00"), ZoneInfo("UTC"), 0) == []


# -- time zones and DST ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # plain zone offsets
        ("0 9 * * *", BERLIN, "2026-01-10 00:00", ["2026-01-10 08:00:00", "2026-01-11 08:00:00"]),
        ("0 9 * * *", BERLIN, "2026-07-10 00:00", ["2026-07-10 07:00:00", "2026-07-11 07:00:00"]),
        ("@daily", LORD_HOWE, "2026-07-01 00:00", ["2026-07-01 13:30:00", "2026-07-02 13:30:00"]),
        # Berlin spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z): fire at the jump
        ("30 2 * * *", BERLIN, "2026-03-28 12:00",
         ["2026-03-29 01:00:00", "2026-03-30 00:30:00"]),
        ("*/15 2 * * *", BERLIN, "2026-03-28 12:00",
         ["2026-03-29 01:00:00", "2026-03-30 00:00:00",
          "2026-03-30 00:15:00"]),
        ("0 * * * *", BERLIN, "2026-03-28 23:30",
         ["2026-03-29 00:00:00", "2026-03-29 01:00:00", "2026-03-29 02:00:00"]),
        ("0 3 * * *", BERLIN, "2026-03-28 12:00", ["2026-03-29 01:00:00", "2026-03-30 01:00:00"]),
        # Berlin fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z): first occurrence only
        ("30 2 * * *", BERLIN, "2026-10-24 12:00",
         ["2026-10-25 00:30:00", "2026-10-26 01:30:00"]),
        ("0 * * * *", BERLIN, "2026-10-24 22:30",
         ["2026-10-24 23:00:00", "2026-10-25 00:00:00", "2026-10-25 02:00:00",
          "2026-10-25 03:00:00"]),
        ("*/20 * * * * *", BERLIN, "2026-10-25 00:59:00",
         ["2026-10-25 00:59:20", "2026-10-25 00:59:40", "2026-10-25 02:00:00"]),
        # New York spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)
        ("30 2 * * *", NEW_YORK, "2026-03-07 12:00",
         ["2026-03-08 07:00:00", "2026-03-09 06:30:00"]),
        ("*/30 2 * * *", NEW_YORK, "2026-03-07 12:00",
         ["2026-03-08 07:00:00", "2026-03-09 06:00:00", "2026-03-09 06:30:00"]),
        # New York fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
        ("30 1 * * *", NEW_YORK, "2026-10-31 12:00",
         ["2026-11-01 05:30:00", "2026-11-02 06:30:00"]),
        ("0,30 * * * *", NEW_YORK, "2026-11-01 04:45",
         ["2026-11-01 05:00:00", "2026-11-01 05:30:00", "2026-11-01 07:00:00"]),
        # Lord Howe: 30-minute shift. 2026-10-04 02:00 +10:30 -> 02:30 +11 (2026-10-03 15:30Z)
        ("15 2 * * *", LORD_HOWE, "2026-10-03 00:00",
         ["2026-10-03 15:30:00", "2026-10-04 15:15:00"]),
        ("*/10 2 * * *", LORD_HOWE, "2026-10-03 12:00",
         ["2026-10-03 15:30:00", "2026-10-03 15:40:00", "2026-10-03 15:50:00",
          "2026-10-04 15:00:00"]),
        # 2026-04-05 02:00 +11 -> 01:30 +10:30 (2026-04-04 15:00Z): 01:30-02:00 repeats
        ("45 1 * * *", LORD_HOWE, "2026-04-04 00:00",
         ["2026-04-04 14:45:00", "2026-04-05 15:15:00"]),
        ("*/10 1 * * *", LORD_HOWE, "2026-04-04 13:55",
         ["2026-04-04 14:00:00", "2026-04-04 14:10:00", "2026-04-04 14:20:00",
          "2026-04-04 14:30:00", "2026-04-04 14:40:00", "2026-04-04 14:50:00",
          "2026-04-05 14:30:00"]),
    ],
)  # fmt: skip
def test_dst_rules(expr: str, zone: str, after: str, expected: list[str]) -> None:
    assert fires(expr, zone, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expr", "zone", "day_start", "day_end", "count"),
    [
        # the autumn day, local 00:00 to 24:00 (exclusive): hours 01..23 once each
        ("0 * * * *", BERLIN, "2026-10-24 22:00", "2026-10-25 23:00", 23),
        ("30 2 * * *", BERLIN, "2026-10-24 22:00", "2026-10-25 22:00", 1),
        ("*/15 2 * * *", BERLIN, "2026-03-28 23:00", "2026-03-29 22:00", 1),
        # 14:00:05..14:59:55 and 15:30:00..15:59:55; 15:00-15:30Z repeats 01:30-02:00
        ("*/5 * * * * *", LORD_HOWE, "2026-04-04 14:00", "2026-04-04 16:00", 719 + 360),
        ("* 1 * * *", LORD_HOWE, "2026-04-04 13:30", "2026-04-05 13:30", 60),
        # 02:00-02:29 collapse into the jump, 15:30Z, which is also 02:30
        ("* 2 * * *", LORD_HOWE, "2026-10-03 15:00", "2026-10-04 15:00", 30),
    ],
)
def test_dst_fire_counts_strictly_increasing(
    expr: str, zone: str, day_start: str, day_end: str, count: int
) -> None:
    s, tz = Schedule.parse(expr), ZoneInfo(zone)
    got, t = [], z(day_start)
    while (t := s.next_after(t, tz)) < z(day_end):
        got.append(t)
    assert len(got) == count
    assert all(a < b for a, b in itertools.pairwise(got))


@pytest.mark.parametrize(
    ("local", "zone", "utc"),
    [
        ("2026-03-29 02:30", BERLIN, "2026-03-29 01:00"),  # gap -> the jump
        ("2026-03-29 02:00", BERLIN, "2026-03-29 01:00"),
        ("2026-03-29 03:00", BERLIN, "2026-03-29 01:00"),  # first time after the gap
        ("2026-10-25 02:30", BERLIN, "2026-10-25 00:30"),  # repeated -> first occurrence
        ("2026-10-04 02:15", LORD_HOWE, "2026-10-03 15:30"),
        ("2026-04-05 01:45", LORD_HOWE, "2026-04-04 14:45"),
        ("2026-06-01 12:00", "UTC", "2026-06-01 12:00"),
    ],
)
def test_to_utc(local: str, zone: str, utc: str) -> None:
    assert to_utc(datetime.fromisoformat(local), ZoneInfo(zone)) == z(utc)


@pytest.mark.parametrize(
    ("expr", "zone", "t", "expected"),
    [
        ("*/5 * * * *", "UTC", "2026-01-01 12:07:30", "2026-01-01 12:05:00"),
        ("*/5 * * * *", "UTC", "2026-01-01 12:05:00", "2026-01-01 12:05:00"),  # inclusive
        ("*/10 * * * * *", "UTC", "2026-01-01 00:00:05", "2026-01-01 00:00:00"),
        ("0 0 1 1 *", "UTC", "2026-06-01 00:00", "2026-01-01 00:00:00"),
        ("0 0 29 2 *", "UTC", "2026-06-01 00:00", None),  # 2024-02-29 is over a year back
        ("0 0 13 * 5", "UTC", "2026-04-12 12:00", "2026-04-10 00:00:00"),
        ("@every 10s", BERLIN, "2026-01-01 00:00:07", "2026-01-01 00:00:00"),
        ("@every 400d", "UTC", "2026-11-10 00:00", None),  # last: 2025-11-08
        ("@every 400d", "UTC", "2026-01-01 00:00", "2025-11-08 00:00:00"),
        ("0 9 * * *", BERLIN, "2026-07-10 06:59:59", "2026-07-09 07:00:00"),
        ("30 2 * * *", BERLIN, "2026-03-29 01:00", "2026-03-29 01:00:00"),  # the jump
        ("30 2 * * *", BERLIN, "2026-03-29 00:59:59", "2026-03-28 01:30:00"),
        ("*/15 2 * * *", BERLIN, "2026-03-29 05:00", "2026-03-29 01:00:00"),
        ("0 * * * *", BERLIN, "2026-10-25 01:30", "2026-10-25 00:00:00"),  # 2nd pass of 02:xx
        ("* * * * * *", BERLIN, "2026-10-25 01:30", "2026-10-25 00:59:59"),
        ("30 2 * * *", BERLIN, "2026-10-25 01:45", "2026-10-25 00:30:00"),
        ("30 1 * * *", NEW_YORK, "2026-11-01 06:45", "2026-11-01 05:30:00"),
        ("*/10 1 * * *", LORD_HOWE, "2026-04-04 14:59", "2026-04-04 14:50:00"),
        ("*/10 1 * * *", LORD_HOWE, "2026-04-04 15:20", "2026-04-04 14:50:00"),
        ("15 2 * * *", LORD_HOWE, "2026-10-03 15:35", "2026-10-03 15:30:00"),
    ],
)
def test_latest_at_or_before(expr: str, zone: str, t: str, expected: str | None) -> None:
    got = Schedule.parse(expr).latest_at_or_before(z(t), ZoneInfo(zone))
    assert got == (z(expected) if expected else None)


def test_next_after_is_fast() -> None:
    s, tz = Schedule.parse("*/10 * * * * *"), ZoneInfo(BERLIN)
    t = z("2026-05-01 00:00")
    start = time.perf_counter()
    for _ in range(2000):
        t = s.next_after(t, tz)
    per_call = (time.perf_counter() - start) / 2000
    assert t == z("2026-05-01 05:33:20")
    assert per_call < 500e-6  # ~10 µs on the dev box; generous for loaded CI machines


# -- property: agrees with an independent oracle -----------------------------------------

# (expression, half-width of the oracle's window of local wall-clock times)
EXPRS = [
    ("*/20 * * * * *", timedelta(hours=2)),
    ("0 */7 * * * *", timedelta(hours=3)),
    ("*/15 * * * *", timedelta(days=1)),
    ("0 * * * *", timedelta(days=1)),
    ("30 2 * * *", timedelta(days=3)),
    ("*/10 1,2 * * *", timedelta(days=3)),
    ("45 1 * * 0", timedelta(days=9)),
    ("0 0 13 * 5", timedelta(days=9)),
]
ZONES = ["UTC", BERLIN, NEW_YORK, LORD_HOWE]
TRANSITIONS = [z(t) for t in ["2026-03-29 01:00", "2026-10-25 01:00", "2026-03-08 07:00",
               "2026-11-01 06:00", "2026-04-04 15:00", "2026-10-03 15:30"]]  # fmt: skip


def oracle_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """The DST rules, written differently: exists -> fold 0; in a gap -> the first UTC
    minute (all these transitions are on minutes) at or after which wall time passed it."""
    first = local.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    t = local.replace(tzinfo=tz, fold=1).astimezone(UTC).replace(second=0)
    while t.astimezone(tz).replace(tzinfo=None) < local:
        t += timedelta(minutes=1)
    return t


def oracle_fires(expr: str, tz: ZoneInfo, around: datetime, width: timedelta) -> list[datetime]:
    centre = around.astimezone(tz).replace(tzinfo=None)
    it = croniter(expr, centre - width, second_at_beginning=len(expr.split()) == 6)
    out: set[datetime] = set()
    while (wall := it.get_next(datetime)) < centre + width:
        out.add(oracle_utc(wall, tz))
    return sorted(out)


@settings(max_examples=300, deadline=None, database=None)
@given(
    spec=st.sampled_from(EXPRS),
    zone=st.sampled_from(ZONES),
    base=st.one_of(
        st.sampled_from(TRANSITIONS),
        st.datetimes(datetime(2025, 1, 1), datetime(2028, 1, 1)).map(
            lambda d: d.replace(tzinfo=UTC)
        ),
    ),
    offset=st.integers(-4 * 3600, 4 * 3600),
    micros=st.integers(0, 999_999),
)
def test_property_matches_oracle(
    spec: tuple[str, timedelta], zone: str, base: datetime, offset: int, micros: int
) -> None:
    expr, width = spec
    tz, s = ZoneInfo(zone), Schedule.parse(expr)
    t = base + timedelta(seconds=offset, microseconds=micros)
    truth = oracle_fires(expr, tz, t, width)
    nxt = s.next_after(t, tz)
    latest = s.latest_at_or_before(t, tz)
    assert nxt > t
    assert nxt == min(f for f in truth if f > t)
    assert latest == max(f for f in truth if f <= t)
    # no fire in between, from either side
    assert s.next_after(nxt - timedelta(microseconds=1), tz) == nxt
    assert s.latest_at_or_before(nxt - timedelta(microseconds=1), tz) == latest
    assert s.latest_at_or_before(nxt, tz) == nxt
    seq = s.preview(t, tz, 5)
    assert seq[0] == nxt
    assert all(a < b for a, b in itertools.pairwise(seq))


# -- the day-field rule, against the peers' published cases ------------------------------
# Independent of this module and of croniter: cases published in robfig/cron's
# spec tests (the parser behind Kubernetes CronJob; seconds first), which follow
# Vixie cron and cronie: a day field whose text starts with ``*`` is unrestricted,
# so the other day field alone decides (AND); two restricted day fields OR.

PEER_ACTIVATION = [
    # (does it fire at this instant?, spec, instant UTC)
    ("0 * * 1,15 * Sun", "2012-07-15 00:00", True),  # Sunday the 15th
    ("0 * * 1,15 * Sun", "2012-06-15 00:00", True),  # Friday the 15th: either field
    ("0 * * 1,15 * Sun", "2012-08-01 00:00", True),  # Wednesday the 1st
    ("0 * * * * Mon", "2012-07-15 00:00", False),  # a Sunday
    ("0 * * */10 * Sun", "2012-07-15 00:00", False),  # */10 is a star: both must match
    ("0 * * 1,15 * *", "2012-07-09 00:00", False),
    ("0 * * 1,15 * *", "2012-07-15 00:00", True),
    ("0 * * */2 * Sun", "2012-07-15 00:00", True),  # the 15th is odd and a Sunday
]
PEER_NEXT = [
    ("0 0 0 */5 Apr,Aug,Oct Mon", "2012-07-09 23:35", "2012-08-06 00:00:00"),
    ("0 0 0 */5 Oct Mon", "2012-07-09 23:35", "2012-10-01 00:00:00"),
    ("0 0 0 * Feb Mon", "2012-07-09 23:35", "2013-02-04 00:00:00"),
    ("0 0 0 9 Apr-Oct *", "2012-07-09 23:35", "2012-08-09 00:00:00"),
    # the same rule in five fields (cronie's man page: "*/5" in a day field is a star)
    ("0 0 */5 * 1", "2012-07-09 23:35", "2012-07-16 00:00:00"),
    ("0 0 1,15 * 1", "2012-07-09 23:35", "2012-07-15 00:00:00"),
]


@pytest.mark.parametrize(("spec", "at", "fires_then"), PEER_ACTIVATION)
def test_day_fields_match_the_peers_activation(spec: str, at: str, fires_then: bool) -> None:
    t = z(at)
    nxt = Schedule.parse(spec).next_after(t - timedelta(seconds=1), ZoneInfo("UTC"))
    assert (nxt == t) is fires_then


@pytest.mark.parametrize(("spec", "after", "expected"), PEER_NEXT)
def test_day_fields_match_the_peers_next(spec: str, after: str, expected: str) -> None:
    assert fires(spec, "UTC", after, 1) == [expected]


@pytest.mark.parametrize(
    ("expr", "field"),
    [("61 * * * *", "field 1 (minute) '61'"), ("* 24 * * *", "field 2 (hour) '24'"),
     ("0 0 32 * *", "field 3 (day-of-month) '32'"), ("* * * 13 *", "field 4 (month) '13'"),
     ("* * * * 9", "field 5 (day-of-week) '9'"), ("70 * * * * *", "field 1 (second) '70'")],
)  # fmt: skip
def test_an_out_of_range_field_is_named(expr: str, field: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(field)):
        Schedule.parse(expr)

"""Schedules in words, for the dashboard: ``30 2 * * 1-5`` -> "at 02:30, Monday to Friday".

Only common forms are described; anything else comes back as the expression
itself (never a wrong sentence). Pure functions, table-tested.
"""

from __future__ import annotations

from scheduler.durations import format_duration, parse_duration

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_DAY_NAMES = {d[:3].lower(): i for i, d in enumerate(DAYS)}
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ALIASES = {
    "@yearly": "every year on 1 January at 00:00",
    "@annually": "every year on 1 January at 00:00",
    "@monthly": "every month on day 1 at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@hourly": "every hour at :00",
}


def describe(expr: str) -> str:
    """The schedule in words, or ``expr`` unchanged when it is not a common form."""
    text = " ".join(expr.split())
    low = text.lower()
    if low in ALIASES:
        return ALIASES[low]
    if low.startswith("@every "):
        try:
            return f"every {format_duration(parse_duration(text[7:].strip()))}"
        except ValueError:
            return text
    fields = text.split(" ")
    if len(fields) == 6:
        return _with_seconds(fields) or text
    if len(fields) == 5:
        return _five(fields) or text
    return text


def _num(field: str, lo: int, hi: int) -> int | None:
    if field.isdigit() and lo <= int(field) <= hi:
        return int(field)
    return None


def _step(field: str, hi: int) -> int | None:
    """N of ``*/N`` (or ``0/N``)."""
    head, sep, n = field.partition("/")
    if sep and head in ("*", "0") and n.isdigit() and 1 <= int(n) <= hi:
        return int(n)
    return None


def _with_seconds(f: list[str]) -> str | None:
    sec, rest = f[0], f[1:]
    if all(x == "*" for x in f):
        return "every second"
    n = _step(sec, 59)
    if n is not None and all(x == "*" for x in rest):
        return "every second" if n == 1 else f"every {n} seconds"
    s = _num(sec, 0, 59)
    if s == 0:
        return _five(rest)
    if s is not None and all(x == "*" for x in rest):
        return f"every minute at second {s}"
    return None


def _days_of_week(field: str) -> str | None:
    def day(x: str) -> int | None:
        if x.lower() in _DAY_NAMES:
            return _DAY_NAMES[x.lower()]
        n = _num(x, 0, 7)
        return None if n is None else n % 7

    if "-" in field and "," not in field:
        a, _, b = field.partition("-")
        da, db = day(a), day(b)
        if da is None or db is None:
            return None
        return f"{DAYS[da]} to {DAYS[db]}"
    names = []
    for part in field.split(","):
        d = day(part)
        if d is None:
            return None
        names.append(DAYS[d])
    if len(names) == 1:
        return f"every {names[0]}"
    return ", ".join(names[:-1]) + " and " + names[-1]


def _five(f: list[str]) -> str | None:
    minute, hour, dom, month, dow = f
    if all(x == "*" for x in f):
        return "every minute"
    n = _step(minute, 59)
    if n is not None and all(x == "*" for x in f[1:]):
        return f"every {n} minutes"
    m = _num(minute, 0, 59)
    if m is None:
        return None
    if all(x == "*" for x in f[1:]):
        return f"every hour at :{m:02d}"
    hours = _step(hour, 23)
    if hours is not None and dom == month == dow == "*":
        return f"every {hours} hours at :{m:02d}"
    h = _num(hour, 0, 23)
    if h is None:
        return None
    at = f"at {h:02d}:{m:02d}"
    if dom == "*" and month == "*":
        if dow == "*":
            return f"every day {at}"
        days = _days_of_week(dow)
        return None if days is None else f"{at}, {days}"
    if dow != "*":
        return None
    d = _num(dom, 1, 31)
    if d is None:
        return None
    if month == "*":
        return f"every month on day {d} {at}"
    mo = _num(month, 1, 12)
    return None if mo is None else f"every year on {d} {MONTHS[mo - 1]} {at}"

"""How values look on the dashboard: times in a zone, durations, ages, sizes, and
the server-rendered SVG chart of recent run durations. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from scheduler.cli.status import span
from scheduler.runs import RunRecord, RunStatus
from scheduler.schedule import Schedule, validate_timezone

OK = frozenset({RunStatus.SUCCEEDED})
NEUTRAL = frozenset({RunStatus.SKIPPED, RunStatus.RUNNING})


def status_class(status: RunStatus | str) -> str:
    """The CSS class of a status: ok, bad, busy or muted."""
    value = RunStatus(status)
    if value in OK:
        return "ok"
    if value is RunStatus.RUNNING:
        return "busy"
    if value is RunStatus.SKIPPED:
        return "muted"
    return "bad"


def zone_of(name: str) -> ZoneInfo:
    try:
        return validate_timezone(name)
    except ValueError:
        return ZoneInfo("UTC")


def when(t: datetime | None, zone: str = "UTC") -> str:
    """``2026-12-01 06:30:00 CET`` in ``zone``; ``-`` when unknown."""
    if t is None:
        return "-"
    local = t.astimezone(zone_of(zone))
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or zone)


def ago(t: datetime | None, now: datetime | None = None) -> str:
    if t is None:
        return "-"
    return span(((now or datetime.now(UTC)) - t).total_seconds()) + " ago"


def seconds(value: float | None) -> str:
    """``0.42s``, ``12.3s``, ``5m3s``; ``-`` when unknown."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    if value < 120:
        return f"{value:.1f}s"
    whole = int(value)
    if whole < 7200:
        return f"{whole // 60}m{whole % 60}s"
    return f"{whole // 3600}h{whole % 3600 // 60}m"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def next_times(schedule: str, zone: str, n: int, now: datetime | None = None) -> list[datetime]:
    """The next ``n`` fire times (UTC); [] when the schedule cannot be evaluated."""
    try:
        return Schedule.parse(schedule).preview(now or datetime.now(UTC), zone_of(zone), n)
    except ValueError:
        return []


def duration_chart(runs: Sequence[RunRecord], width: int = 600, height: int = 120) -> Markup:
    """An inline SVG bar chart of the durations of ``runs`` (newest first in, oldest left).

    Bars are coloured by status; each has a ``<title>`` (run id, duration) for a
    tooltip and screen readers. Empty when no run has a duration.
    """
    done = [(r, r.duration) for r in reversed(runs) if r.duration is not None]
    if not done:
        return Markup("")
    top = max(d for _, d in done if d is not None) or 1.0
    pad, base = 4, height - 16
    bar = min(24.0, max(2.0, (width - 2 * pad) / len(done) - 2))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Durations of the last {len(done)} runs, longest {seconds(top)}">',
        f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" class="axis"/>',
        f'<text x="{pad}" y="{height - 3}" class="tick">oldest</text>',
        f'<text x="{width - pad}" y="{height - 3}" class="tick" text-anchor="end">newest</text>',
        f'<text x="{pad}" y="11" class="tick">{escape(seconds(top))}</text>',
    ]
    for i, (r, d) in enumerate(done):
        h = max(1.0, (d or 0.0) / top * (base - 14))
        x = pad + i * (bar + 2)
        parts.append(
            f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
            f'class="{status_class(r.status)}"><title>{escape(r.run_id)}: '
            f"{escape(seconds(d))} ({escape(r.status.value)})</title></rect>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))

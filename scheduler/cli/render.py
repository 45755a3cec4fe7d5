"""CLI output: tables for people, JSON or YAML for scripts.

Rules: data goes to stdout, errors and problems to stderr. ``-o json`` and
``-o yaml`` print exactly what the API returned (job specs without their
default fields, so the output can be applied again). Tables
(:mod:`scheduler.cli.table`) print whole values, one row per line, when stdout
is not a terminal; on a terminal long cells end with ``…``; ``-o wide`` prints
whole values and more columns. Nothing is read as rich markup or ``:emoji:``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scheduler.cli.common import Format
from scheduler.cli.status import JobState
from scheduler.durations import format_duration

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Format", "emit", "err", "out", "say", "warn"]


@functools.cache
def _console(stderr: bool) -> Console:
    from rich.console import Console  # ~35 ms: only when something is printed with it

    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def out() -> Console:
    """The console on stdout (created on first use)."""
    return _console(False)


def err() -> Console:
    """The console on stderr (created on first use)."""
    return _console(True)


def say(text: str) -> None:
    """One line of data on stdout, printed as is (no markup, no emoji)."""
    out().print(text, markup=False)


def warn(text: str) -> None:
    """One line on stderr, printed as is."""
    err().print(text, markup=False)


_DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "env": {},
    "concurrency": "forbid",
    "retries": 0,
    "retry_backoff": 10.0,
    "selector": {},
    "labels": {},
    "suspend": False,
    "description": "",
}


DURATIONS = ("timeout", "retry_backoff", "starting_deadline", "keep_for")
"""Spec fields the API returns as float seconds (stored so; written as ``10m``)."""


def compact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec without null and default-valued fields (what a person would write),
    durations as written in a jobs file (``10m``, not ``600.0``). For output only:
    the result applies again to the same spec."""
    out = {k: v for k, v in spec.items() if v is not None and _DEFAULTS.get(k, ...) != v}
    for key in DURATIONS:
        if isinstance(out.get(key), int | float) and not isinstance(out[key], bool):
            out[key] = format_duration(float(out[key]))
    return out


def yamlish(value: Any) -> str:
    """A value as a jobs file writes it: ``true``, ``10m``, ``["a", "b"]``, ``{zone: a}``;
    ``(not set)`` for a missing field."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yamlish(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and (not value or value != value.strip() or "\n" in value):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def emit(data: Any, fmt: str) -> None:
    """Print ``data`` as JSON or YAML (for table output, use the functions below)."""
    if fmt == "yaml":
        import yaml

        say(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
    else:
        say(json.dumps(data, indent=2, ensure_ascii=False))


GREEN, RED, YELLOW, CYAN = "32", "31", "33", "36"
STATUS_COLOURS = {
    "succeeded": GREEN, "claiming": GREEN,
    "running": CYAN,
    "failed": RED, "timed_out": RED, "killed": RED, "lost": RED,
    "skipped": YELLOW, "missed": YELLOW, "draining": YELLOW, "comparing": YELLOW,
    "clock-skewed": RED,
}  # fmt: skip
"""The colour of a status cell by its first word (``failed 2m ago`` is red)."""


def status_colour(cell: str) -> str | None:
    word, _, _ = cell.partition(" ")
    return STATUS_COLOURS.get(word)


def _yes_yellow(cell: str) -> str | None:
    return YELLOW if cell == "yes" else None


PAINT = {"STATUS": status_colour, "LAST RUN": status_colour, "STATE": status_colour}
PAINT_JOBS = {**PAINT, "SUSPENDED": _yes_yellow}


def print_table(
    headers: list[str],
    rows: list[list[str]],
    *,
    wide: bool = False,
    keep: tuple[str, ...] = (),
    paint: dict[str, Any] | None = None,
) -> None:
    """Whole values in a pipe or with ``wide``; fitted to the terminal otherwise
    (``keep``: columns cut only when nothing else can give). Status cells are
    coloured (``paint``) only on a terminal that takes colour (not with
    ``NO_COLOR`` set or ``TERM=dumb``): a pipe gets plain text."""
    from scheduler.cli import table

    console = out()
    width = console.width if console.is_terminal and not wide else None
    coloured = console.is_terminal and console.color_system is not None and not console.no_color
    for line in table.render(headers, rows, width, keep, paint if coloured else None):
        console.file.write(line + "\n")
    console.file.flush()


def _labels(labels: Any) -> str:
    if not isinstance(labels, dict) or not labels:
        return "-"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _command(spec: dict[str, Any]) -> str:
    if spec.get("shell"):
        return str(spec["shell"])
    return " ".join(str(a) for a in spec.get("command") or [])


def jobs_table(
    jobs: Iterable[dict[str, Any]],
    invalid: Iterable[dict[str, Any]] = (),
    *,
    wide: bool = False,
    state: dict[str, JobState] | None = None,
) -> None:
    """``state``: the run columns (ACTIVE, LAST RUN, NEXT RUN) of each job, by name."""
    headers = ["NAME", "SCHEDULE", "TIMEZONE", "CONCURRENCY", "SUSPENDED"]
    if state is not None:
        headers += ["ACTIVE", "LAST RUN", "NEXT RUN"]
    headers.append("COMMAND")
    if wide:
        headers += ["TIMEOUT", "RETRIES", "SELECTOR", "LABELS", "DESCRIPTION"]
    rows = []
    for j in jobs:
        row = [
            j["name"],
            j["schedule"],
            j.get("timezone", "UTC"),
            j.get("concurrency", "forbid"),
            "yes" if j.get("suspend") else "no",
        ]
        if state is not None:
            st = state.get(j["name"]) or JobState()
            row += [str(st.active), st.last, st.next]
        row.append(_command(j))
        if wide:
            row += [
                _seconds(j.get("timeout")),
                str(j.get("retries", 0)),
                _labels(j.get("selector")),
                _labels(j.get("labels")),
                j.get("description") or "-",
            ]
        rows.append(row)
    keep = ("NAME", "SCHEDULE", "CONCURRENCY", "SUSPENDED", "ACTIVE", "LAST RUN", "NEXT RUN")
    print_table(headers, rows, wide=wide, keep=keep, paint=PAINT_JOBS)
    for bad in invalid:
        warn(f"warning: invalid job value in etcd: {bad['name']}: {bad['error']}")


def job_detail(spec: dict[str, Any], mod_revision: int | None = None) -> None:
    """One field per line, values in full (a terminal folds a long line; nothing is cut)."""
    rows = []
    for key, value in compact_spec(spec).items():
        rows.append([key, value if isinstance(value, str) else json.dumps(value)])
    if mod_revision is not None:
        rows.append(["mod_revision", str(mod_revision)])
    print_table(["FIELD", "VALUE"], rows, wide=True)


def plan_lines(plan: dict[str, Any], details: dict[str, list[str]] | None = None) -> None:
    """One line per change (``+ create``, ``~ update``, ``- delete``), then a summary."""
    marks = (("create", "+", "green"), ("update", "~", "yellow"), ("delete", "-", "red"))
    for action, mark, colour in marks:
        for name in plan.get(action, []):
            out().print(f"[{colour}]{mark} {action:<9}[/]", name, markup=True)
            for line in (details or {}).get(name, []):
                say(f"    {line}")
    counts = ", ".join(
        f"{len(plan.get(a, []))} {a}" for a in ("create", "update", "delete", "unchanged")
    )
    if plan.get("dry_run"):
        verdict = "dry run, nothing written"
    elif plan.get("applied"):
        verdict = f"applied in {plan.get('batches', 0)} transaction(s)"
    else:
        verdict = "not applied"
    say(f"{counts} ({verdict})")
    for bad in plan.get("invalid_in_etcd", []):
        warn(f"warning: invalid job value in etcd: {bad['name']}: {bad['error']}")


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return format_duration(float(value))
    except (TypeError, ValueError):
        return str(value)


def _when(value: Any) -> str:
    if not value:
        return "-"
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def when(value: Any) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SSZ`` (UTC); ``-`` when missing."""
    return _when(value)


def _duration(run: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(str(run["start"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(run["end"]).replace("Z", "+00:00"))
    except (KeyError, ValueError, TypeError):
        return "-"
    return format_duration(max(0.0, (end - start).total_seconds()))


def runs_table(runs: Iterable[dict[str, Any]], *, wide: bool = False) -> None:
    """REASON: the record's message for a run that did not succeed (skipped, missed,
    failed, ...); ``-o wide`` has every message (MESSAGE) instead, and END, MANUAL."""
    headers = ["RUN ID", "STATUS", "TICK", "START", "WORKER", "DURATION", "EXIT", "ATTEMPT"]
    headers += ["TOKEN", "END", "MANUAL", "MESSAGE"] if wide else ["TOKEN", "REASON"]
    rows = []
    for r in runs:
        exit_code = r.get("exit_code")
        if exit_code is None and r.get("signal"):
            exit_code = f"signal {r['signal']}"
        status = str(r.get("status", "?"))
        row = [
            r["run_id"],
            status,
            _when(r.get("tick")),
            _when(r.get("start")),
            str(r.get("worker") or "-"),
            _duration(r),
            "-" if exit_code is None else str(exit_code),
            str(r.get("attempt", 1)),
            str(r.get("fencing_token") or "-"),
        ]
        if wide:
            row += [
                _when(r.get("end")),
                "yes" if r.get("manual") else "no",
                str(r.get("message") or "-"),
            ]
        else:
            ok = status in ("succeeded", "running")
            row.append("-" if ok else str(r.get("message") or "-"))
        rows.append(row)
    keep = ("RUN ID", "STATUS", "DURATION", "EXIT", "TOKEN")
    print_table(headers, rows, wide=wide, keep=keep, paint=PAINT)


def workers_table(workers: Iterable[dict[str, Any]], *, wide: bool = False) -> None:
    headers = ["ID", "HOST", "LABELS", "CAPACITY", "RUNNING", "SKEW", "STATE", "VERSION"]
    rows = []
    from scheduler.registration import WorkerRegistration  # pydantic: not at start-up

    for w in workers:
        reg = WorkerRegistration.lenient(w)
        rows.append(
            [
                reg.id,
                reg.host or "-",
                _labels(reg.labels),
                "-" if reg.capacity is None else str(reg.capacity),
                "-" if reg.running is None else str(reg.running),
                "-" if reg.skew is None else f"{reg.skew:+.3f}s",
                _worker_state(w),
                reg.version or "-",
            ]
        )
    keep = ("ID", "CAPACITY", "RUNNING", "SKEW", "STATE")
    print_table(headers, rows, wide=wide, keep=keep, paint=PAINT)


def _worker_state(w: dict[str, Any]) -> str:
    """What the worker does now: claiming, draining, or standing back for its clock."""
    from scheduler.registration import WorkerRegistration  # pydantic: not at start-up

    reg = WorkerRegistration.lenient(w)
    if reg.draining:
        return "draining"
    if not reg.clock_ok:
        if not reg.clock_known:
            return "comparing clocks"  # just started: a sample of every peer is due
        return "clock-skewed (not claiming)"
    return "claiming"


def problems(items: Iterable[dict[str, Any]]) -> None:
    for p in items:
        where = ": ".join(str(p[k]) for k in ("job", "field") if p.get(k))
        warn(f"  {where + ': ' if where else ''}{p.get('message', '')}")

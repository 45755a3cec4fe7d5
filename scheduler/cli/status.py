"""What the CLI concludes from API answers: who can run a job, what a status means.

Standard library only (used by ``run``, ``kill``, ``get jobs`` and ``apply``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FINAL_OK = "succeeded"
NOT_RUN = ("skipped", "missed")
"""Final statuses of a tick or request that did not run the job."""

NO_ELIGIBLE = "no eligible worker"


def selector_text(selector: Mapping[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "-"


def eligible(selector: Mapping[str, Any] | None, workers: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of the live workers that can take a run of a job with ``selector``:
    every label of the selector, and not draining (as the workers decide)."""
    out = []
    from scheduler.registration import WorkerRegistration  # pydantic: not at start-up

    for w in workers:
        reg = WorkerRegistration.lenient(w)
        if reg.draining:
            continue
        if all(str(reg.labels.get(k)) == str(v) for k, v in (selector or {}).items()):
            out.append(reg.id)
    return out


def nobody_can_run(name: str, selector: Mapping[str, Any] | None, workers: list[Any]) -> str:
    """Why no live worker can take a run of the job (call when :func:`eligible` is empty)."""
    if not workers:
        return f"no live worker can run job {name!r}: no worker is registered"
    if not selector:
        return f"no live worker can run job {name!r}: every live worker is draining"
    return (
        f"no live worker can run job {name!r}: its selector ({selector_text(selector)}) "
        f"matches no live worker's labels (etcron workers lists them)"
    )


def exit_code(status: str) -> int:
    """``run --wait``: 0 for ``succeeded``, 1 for any other final status."""
    return 0 if status == FINAL_OK else 1


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """``5s``, ``3m``, ``2h``, ``4d`` (kubectl's AGE): whole units, the larger from 2 of them."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600)):
        if whole >= 2 * size:
            return f"{whole // size}{unit}"
    return f"{whole // 60}m" if whole >= 60 else f"{whole}s"


def age(value: Any, now: datetime | None = None) -> str:
    """How long ago ``value`` (an ISO time) was; ``-`` if unknown."""
    t = parse_time(value)
    if t is None:
        return "-"
    return span(((now or datetime.now(UTC)) - t).total_seconds())


def ending(run: Mapping[str, Any]) -> str:
    """``exit 0``, ``signal 9``, a message, or nothing: how a final run ended."""
    code, sig = run.get("exit_code"), run.get("signal")
    if code is not None:
        how = f"exit {code}"
    elif sig:
        how = f"signal {sig}"
    else:
        how = ""
    message = str(run.get("message") or "")
    return "; ".join(x for x in (how, message) if x)


@dataclass(frozen=True)
class JobState:
    """The run columns of ``get jobs``."""

    active: int | str = "-"
    last: str = "-"
    next: str = "-"


def job_state(
    runs: Sequence[Mapping[str, Any]],
    next_at: datetime | None,
    now: datetime,
    *,
    wide: bool = False,
) -> JobState:
    """ACTIVE: running records among ``runs`` (the newest of the job); LAST RUN: the
    newest record's status and age; NEXT RUN: in how long (``wide``: the UTC time)."""
    active = sum(1 for r in runs if r.get("status") == "running")
    last = "-"
    if runs:
        newest = runs[0]
        when = newest.get("end") or newest.get("start") or newest.get("tick")
        last = f"{newest.get('status', '?')} {age(when, now)} ago"
    nxt = "-"
    if next_at is not None:
        if wide:
            nxt = next_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        else:
            nxt = f"in {span((next_at - now).total_seconds())}"
    return JobState(active, last, nxt)

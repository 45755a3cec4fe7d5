"""The output budget: which runs' output goes (``scheduler.master.space``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.master.space import over_budget, stored_output
from scheduler.runs import RunRecord, RunStatus

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def rec(
    i: int, size: int, status: RunStatus = RunStatus.SUCCEEDED, omitted: int = 0, job: str = "j"
) -> RunRecord:
    tick = T0 + timedelta(seconds=i)
    return RunRecord(
        job=job,
        run_id=f"{tick:%Y%m%dT%H%M%S}Z-{i:06x}",
        tick=tick,
        status=status,
        output_bytes=size,
        output_omitted=omitted,
        output_chunks=1 if size > omitted else 0,
    )


def test_the_oldest_final_runs_go_first_until_under_budget() -> None:
    runs = [rec(i, 100) for i in range(10)]
    doomed = over_budget(list(reversed(runs)), 650)
    assert [r.run_id for r in doomed] == [r.run_id for r in runs[:4]]


def test_running_runs_and_runs_without_chunks_are_never_picked() -> None:
    runs = [rec(0, 500, RunStatus.RUNNING), rec(1, 0), rec(2, 300, omitted=300), rec(3, 400)]
    assert stored_output(runs[2]) == 0
    assert [r.run_id for r in over_budget(runs, 100)] == [runs[3].run_id]


def test_nothing_goes_under_budget() -> None:
    assert over_budget([rec(i, 100) for i in range(3)], 300) == []


def test_a_job_past_its_own_budget_loses_its_oldest_output_first() -> None:
    loud = [rec(i, 100, job="loud") for i in range(0, 10, 2)]  # 500 bytes
    quiet = [rec(i, 100, job="quiet") for i in range(1, 10, 2)]  # 500 bytes
    doomed = over_budget(loud + quiet, 10_000, per_job=300)
    assert [r.run_id for r in doomed] == sorted(r.run_id for r in loud[:2] + quiet[:2])
    doomed = over_budget(loud + quiet[:1], 10_000, per_job=300)
    assert [r.run_id for r in doomed] == [r.run_id for r in loud[:2]]
    # and both budgets at once: the total goes under 500 as well
    assert len(over_budget(loud + quiet, 500, per_job=300)) == 5

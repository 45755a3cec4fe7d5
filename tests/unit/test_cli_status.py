"""What the CLI concludes from API answers (scheduler/cli/status.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.cli.status import eligible, exit_code, job_state, nobody_can_run, span

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (7199, "119m"), (7200, "2h"), (172800, "2d")],
)
def test_span_is_kubectl_like(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_eligible_needs_every_label_and_a_worker_that_is_not_draining() -> None:
    live = [
        {"id": "a", "labels": {"zone": "a", "gpu": "yes"}},
        {"id": "b", "labels": {"zone": "b"}},
        {"id": "c", "labels": {"zone": "a", "gpu": "yes"}, "draining": True},
    ]
    assert eligible({"zone": "a", "gpu": "yes"}, live) == ["a"]
    assert eligible({}, live) == ["a", "b"]
    assert eligible({"zone": "c"}, live) == []
    assert "matches no live worker's labels" in nobody_can_run("j", {"zone": "c"}, live)
    assert "no worker is registered" in nobody_can_run("j", {"zone": "c"}, [])


def test_job_state_counts_running_and_reads_the_newest_record() -> None:
    runs = [
        {"status": "running", "start": (NOW - timedelta(seconds=5)).isoformat()},
        {"status": "failed", "end": (NOW - timedelta(minutes=3)).isoformat()},
    ]
    st = job_state(runs, NOW + timedelta(hours=3), NOW)
    assert (st.active, st.last, st.next) == (1, "running 5s ago", "in 3h")
    wide = job_state([], NOW + timedelta(hours=3), NOW, wide=True)
    assert (wide.active, wide.last, wide.next) == (0, "-", "2026-12-01 13:00:00Z")
    assert job_state([], None, NOW).next == "-"


@pytest.mark.parametrize(
    ("status", "code"),
    [("succeeded", 0), ("failed", 1), ("timed_out", 1), ("killed", 1), ("lost", 1), ("skipped", 1)],
)
def test_run_wait_exit_codes(status: str, code: int) -> None:
    assert exit_code(status) == code

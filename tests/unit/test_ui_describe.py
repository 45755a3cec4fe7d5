"""Schedules in words, the duration chart and the jobs search: pure functions, tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.master.ui.describe import describe
from scheduler.master.ui.overview import matches
from scheduler.master.ui.present import duration_chart, seconds, status_class, when
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("7 * * * *", "every hour at :07"),
        ("0 */6 * * *", "every 6 hours at :00"),
        ("30 2 * * *", "every day at 02:30"),
        ("30 2 * * 1-5", "at 02:30, Monday to Friday"),
        ("0 9 * * mon-fri", "at 09:00, Monday to Friday"),
        ("0 9 * * 0", "at 09:00, every Sunday"),
        ("0 9 * * 7", "at 09:00, every Sunday"),
        ("0 18 * * 1,3,5", "at 18:00, Monday, Wednesday and Friday"),
        ("15 4 1 * *", "every month on day 1 at 04:15"),
        ("0 0 25 12 *", "every year on 25 December at 00:00"),
        ("* * * * * *", "every second"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("0 30 2 * * *", "every day at 02:30"),
        ("15 * * * * *", "every minute at second 15"),
        ("@daily", "every day at 00:00"),
        ("@hourly", "every hour at :00"),
        ("@every 90s", "every 1m30s"),
        ("@every 10m", "every 10m"),
        # not a common form: the expression itself, never a wrong sentence
        ("5-10 * * * *", "5-10 * * * *"),
        ("0 9 1 * 1", "0 9 1 * 1"),
        ("0 9 * 1-3 *", "0 9 * 1-3 *"),
        ("*/7 9 * * *", "*/7 9 * * *"),
        ("0 9 L * *", "0 9 L * *"),
        ("@every soon", "@every soon"),
        ("0 99 * * *", "0 99 * * *"),
    ],
)
def test_describe(expr: str, words: str) -> None:
    assert describe(expr) == words


def _run(i: int, status: RunStatus, took: float | None) -> RunRecord:
    tick = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=i)
    return RunRecord(
        job="j",
        run_id=f"r{i}<x>",
        tick=tick,
        status=status,
        start=tick,
        end=None if took is None else tick + timedelta(seconds=took),
    )


def test_duration_chart_draws_one_bar_per_finished_run_escaped() -> None:
    runs = [
        _run(3, RunStatus.RUNNING, None),
        _run(2, RunStatus.FAILED, 4.0),
        _run(1, RunStatus.SUCCEEDED, 2.0),
    ]
    svg = str(duration_chart(runs))
    assert svg.count("<rect") == 2
    assert 'class="bad"' in svg and 'class="ok"' in svg
    assert "<x>" not in svg and "r2&lt;x&gt;" in svg  # run ids are escaped
    assert svg.index("r1&lt;") < svg.index("r2&lt;")  # oldest on the left
    assert str(duration_chart([_run(1, RunStatus.RUNNING, None)])) == ""


def test_values_shown() -> None:
    assert status_class("succeeded") == "ok" and status_class("missed") == "bad"
    assert status_class("running") == "busy" and status_class("skipped") == "muted"
    assert seconds(None) == "-" and seconds(0.5) == "0.50s" and seconds(125) == "2m5s"
    t = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert when(t, "Europe/Berlin") == "2026-07-01 14:00:00 CEST"
    assert when(t, "No/Such_Zone") == "2026-07-01 12:00:00 UTC"


def test_search_words_match_names_and_labels() -> None:
    spec = JobSpec(name="backup-db", schedule="@daily", shell="x", labels={"team": "ops"})
    assert matches(spec, "backup") and matches(spec, "BACKUP db")
    assert matches(spec, "team=ops") and matches(spec, "db team=ops")
    assert not matches(spec, "team=dev") and not matches(spec, "restore")

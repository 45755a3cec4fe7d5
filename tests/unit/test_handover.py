"""Which tick a run may hand its lock to (``workers.handover.next_tick``)."""

from __future__ import annotations

from scheduler.model import JobSpec
from workers.handover import next_tick

T = 1_800_000_000_000  # a whole second, in ms


def job(schedule: str = "* * * * * *") -> JobSpec:
    return JobSpec(name="j", schedule=schedule, shell="true")


def test_the_next_tick_when_it_is_due_within_ahead() -> None:
    assert next_tick(job(), T, T + 200, 2000) == T + 1000
    assert next_tick(job("*/2 * * * * *"), T, T + 200, 2000) == T + 2000


def test_none_when_the_next_tick_is_further_than_ahead() -> None:
    assert next_tick(job(), T, T + 50, 250) is None
    assert next_tick(job("*/5 * * * * *"), T, T + 200, 2000) is None


def test_a_tick_due_less_than_ahead_ago_is_still_handed_over() -> None:
    # the run ended 0.5 s after the next tick was due: others wait ``ahead`` for it
    assert next_tick(job(), T, T + 1500, 2000) == T + 1000


def test_a_tick_past_its_window_gives_way_to_a_later_one() -> None:
    # the run of T took 3.5 s: T+1 s is 2.5 s past (beyond ahead); T+3 s is not
    assert next_tick(job(), T, T + 3500, 2000) == T + 3000
    # the run of T took 8.5 s on a job every 5 s: T+5 s is past, T+10 s is near
    assert next_tick(job("*/5 * * * * *"), T, T + 8500, 2000) == T + 10_000
    assert next_tick(job("*/10 * * * * *"), T, T + 3500, 2000) is None

"""Claim-ahead follows the claims' round trips (workers/pace.py)."""

from __future__ import annotations

import pytest

from workers.pace import MAX_CLAIM_AHEAD, Pace


def test_fast_commits_keep_the_configured_ahead() -> None:
    pace = Pace(0.25)
    for _ in range(200):
        pace.took(0.005)
    assert pace.ahead == 0.25
    assert not pace.slow and pace.late_grace_ms() == 0


def test_slow_commits_claim_further_ahead_up_to_the_cap() -> None:
    pace = Pace(0.25)
    for _ in range(64):
        pace.took(0.4)
    assert pace.ahead == pytest.approx(1.5 * 0.4 + 0.05)
    assert pace.slow and pace.late_grace_ms() == pace.ahead_ms
    for _ in range(64):
        pace.took(5.0)  # an outage: claims time out
    assert pace.ahead == MAX_CLAIM_AHEAD


def test_ahead_comes_back_when_commits_are_fast_again() -> None:
    pace = Pace(0.25)
    for _ in range(64):
        pace.took(0.6)
    assert pace.slow
    for _ in range(64):
        pace.took(0.01)
    assert pace.ahead == 0.25 and not pace.slow

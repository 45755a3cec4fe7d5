"""What `etcron workers` says a worker is doing."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.cli.render import _worker_state


@pytest.mark.parametrize(
    ("registration", "state"),
    [
        ({"clock_ok": True}, "claiming"),
        ({}, "claiming"),  # an older worker that does not say
        ({"clock_ok": False, "clock_known": True, "skew": 3600}, "clock-skewed (not claiming)"),
        ({"clock_ok": False, "clock_known": False}, "comparing clocks"),
        ({"clock_ok": False, "draining": True}, "draining"),
    ],
)
def test_worker_state(registration: dict[str, Any], state: str) -> None:
    assert _worker_state(registration) == state

"""The connection table (who is closed to make room), the log throttle, the fd budget."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import structlog

from scheduler.master.connections import FD_RESERVE, ConnectionTable, connection_budget
from scheduler.master.log_throttle import ThrottleFilter, throttled

ROOT = Path(__file__).resolve().parents[2]


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True

    def __repr__(self) -> str:
        return self.name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_longest_idle_connection_makes_room() -> None:
    table = ConnectionTable(3)
    a, b, c, d, e = (Conn(n) for n in "abcde")
    for conn in (a, b, c):
        assert table.admit(conn)
    table.busy(a)  # a serves a request: never evicted
    table.idle(b)  # b finished a request: now the most recently idle
    assert table.admit(d)
    assert c.evicted and not a.evicted and not b.evicted
    assert table.admit(e)
    assert b.evicted and len(table) == 3
    assert (table.evicted, table.refused) == (2, 0)


def test_a_newcomer_is_refused_only_when_every_connection_serves() -> None:
    table = ConnectionTable(2)
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    table.admit(a)
    table.admit(b)
    table.busy(a)
    table.busy(b)
    assert not table.admit(c)
    assert table.refused == 1 and len(table) == 2 and not (a.evicted or b.evicted)
    table.release(a)
    table.release(a)  # idempotent
    assert table.admit(c) and len(table) == 2


def test_idle_after_release_does_not_resurrect() -> None:
    table = ConnectionTable(1)
    a, b = Conn("a"), Conn("b")
    table.admit(a)
    table.release(a)
    table.idle(a)  # a late callback of a closed connection
    assert table.admit(b) and not a.evicted and len(table) == 1


def test_one_warning_per_interval_with_the_counts() -> None:
    clock = Clock()
    table = ConnectionTable(1, warn_every=60, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for i in range(500):
            conn = Conn(str(i))
            table.admit(conn)
            if i % 2:
                table.busy(conn)
        clock.now += 61
        table.admit(Conn("late"))
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 2
    assert warnings[0]["idle_closed"] == 1 and warnings[0]["refused"] == 0
    # conn 1 took conn 0's place and went busy: the 498 after it and "late" were refused
    assert warnings[1]["idle_closed"] == 0 and warnings[1]["refused"] == 499
    assert warnings[1]["interval_s"] == 61


def test_throttle_passes_one_record_of_a_kind_per_interval() -> None:
    clock = Clock()
    flt = ThrottleFilter(every=60, clock=clock)

    def record(msg: str, name: str = "uvicorn.error") -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)

    passed = [flt.filter(record("Invalid HTTP request received.")) for _ in range(1000)]
    assert passed.count(True) == 1
    assert flt.filter(record("another kind"))
    assert flt.filter(record("Invalid HTTP request received.", name="asyncio"))
    clock.now += 60
    late = record("Invalid HTTP request received.")
    assert flt.filter(late)
    assert "999 more like this in 60s not logged" in late.getMessage()


def test_throttle_memory_is_bounded_by_kinds() -> None:
    clock = Clock()
    flt = ThrottleFilter(every=60, clock=clock)
    for i in range(5000):
        flt.filter(logging.LogRecord("asyncio", 40, __file__, 1, f"error {i}\ndetail", None, None))
    assert len(flt._passed) <= 1000


def test_throttled_installs_and_removes_the_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    before = list(logger.filters)
    with throttled():
        assert len(logger.filters) == len(before) + 1
    assert logger.filters == before


def test_connection_budget_fits_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
        assert connection_budget(100, 32) == (100, 32, 4096)  # fits: nothing raised

        cap, batch, limit = connection_budget(10**6, 512)
        assert limit == hard or hard == resource.RLIM_INFINITY  # raised as far as allowed
        if hard != resource.RLIM_INFINITY:
            assert batch == 512 and 0 < cap <= hard - FD_RESERVE - 2 * 512
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connection_budget_shrinks_under_a_low_hard_limit() -> None:
    # lowering a hard limit cannot be undone: do it in a child process
    code = (
        "import resource\n"
        "from scheduler.master.connections import connection_budget\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (500, 500))\n"
        "print(*connection_budget(1000, 512))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    cap, batch, limit = map(int, out.stdout.split())
    assert limit == 500 and 16 <= batch < 128
    assert cap > 0 and cap + 2 * batch + FD_RESERVE < 500

"""proof.ledger: the one ledger format and checker used by bench, chaos and the tests."""

from __future__ import annotations

import math
from pathlib import Path

from proof import ledger

T = "2026-03-01T10:00:0{}.000Z"
T0 = ledger.parse_tick(T.format(0))


def line(job: str, sec: int, run: str, kind: str, at: float, token: int = 1) -> str:
    return f"{job} {T.format(sec)} {run} {token} w1 {kind} {T0 + at:.6f}"


def write(tmp_path: Path, *lines: str) -> list[ledger.Line]:
    p = tmp_path / "ledger"
    p.write_text("".join(x + "\n" for x in lines))
    return ledger.read(p)


def test_read_parses_fields_and_skips_torn_lines(tmp_path: Path) -> None:
    lines = write(tmp_path, line("a", 1, "r1", "start", 1.25, token=7), "a torn", "")
    assert len(lines) == 1
    (e,) = lines
    assert (e.job, e.run_id, e.token, e.worker, e.kind) == ("a", "r1", 7, "w1", "start")
    assert e.tick_ms == round(T0 * 1000) + 1000 and e.tick_iso == T.format(1)
    assert math.isclose(e.lag_ms, 250, abs_tol=1)
    assert ledger.read(tmp_path / "missing") == []


def test_duplicates_count_runs_per_job_and_tick(tmp_path: Path) -> None:
    lines = write(
        tmp_path,
        line("a", 1, "r1", "start", 1.0),
        line("a", 1, "r2", "start", 1.1),
        line("a", 2, "r3", "start", 2.0),
        line("b", 1, "r4", "rejected:start", 1.0),
        line("b", 1, "r5", "start", 1.0),
    )
    t1 = round(T0 * 1000) + 1000
    assert ledger.duplicates(lines) == {("a", t1): 2, ("b", t1): 2}


def test_overlaps_use_first_and_last_line_of_each_run(tmp_path: Path) -> None:
    lines = write(
        tmp_path,
        line("a", 1, "r1", "start", 1.0),
        line("a", 1, "r1", "beat", 3.5),  # r1 alive until 3.5
        line("a", 2, "r2", "start", 2.0),  # starts inside r1
        line("a", 2, "r2", "end", 2.1),
        line("a", 3, "r3", "start", 3.6),
        line("b", 1, "r4", "start", 1.0),
        line("b", 1, "r4", "end", 1.5),
        line("b", 2, "r5", "start", 2.0),
    )
    assert ledger.overlaps(lines) == [("a", "r1", "r2")]
    assert ledger.overlaps(lines, ["b"]) == []
    assert ledger.unfinished(lines) == 3  # r1, r3, r5 wrote no end line


def test_misses_and_check_split_misses_by_fault(tmp_path: Path) -> None:
    lines = write(tmp_path, *(line("a", s, f"r{s}", "start", s) for s in (1, 2, 5, 6)))
    s0 = round(T0)
    assert ledger.misses(lines, ["a"], range(s0 + 1, s0 + 7)) == [("a", s0 + 3), ("a", s0 + 4)]
    fault = ledger.Fault("cut", T0 + 3.7, T0 + 4.2)  # covers 3.2 .. 4.2
    rep = ledger.check(lines, window=(T0, T0 + 7), every_second=["a"], faults=[fault])
    assert rep.ticks_checked == 6  # seconds 1..6
    assert [m for _, m in rep.misses_inside] == [ledger.show_tick(s0 + 4)]
    assert [m for _, m in rep.misses_outside] == [ledger.show_tick(s0 + 3)]
    assert rep.counts()["duplicates"] == rep.counts()["overlaps"] == 0
    assert ledger.gaps(lines, "a", T0, T0 + 7) == 2.0

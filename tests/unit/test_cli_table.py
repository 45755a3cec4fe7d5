"""Plain-text tables (scheduler/cli/table.py): whole values in a pipe, fitted on a terminal."""

from __future__ import annotations

from rich.cells import cell_len

from scheduler.cli.table import ELLIPSIS, fit, render

HEADERS = ["RUN ID", "STATUS", "WORKER", "TOKEN"]
ROWS = [
    ["20260101T000000Z-abcdef", "succeeded", "worker-" + "x" * 60, "123456789"],
    ["20260101T000100Z-012345", "failed", "w2", "7"],
]


def test_no_width_prints_every_value_whole_on_one_line() -> None:
    lines = render(HEADERS, ROWS, None)
    assert len(lines) == 3
    for row, line in zip(ROWS, lines[1:], strict=True):
        assert line.split() == row
    # columns line up: every value of a column starts at the header's offset
    assert lines[1].index("succeeded") == lines[0].index("STATUS") == lines[2].index("failed")


def test_a_width_cuts_the_widest_column_with_an_ellipsis_and_keeps_short_ones() -> None:
    lines = render(HEADERS, ROWS, 80)
    assert all(cell_len(line) <= 80 for line in lines), lines
    assert "succeeded" in lines[1] and "123456789" in lines[1]
    assert "20260101T000000Z-abcdef" in lines[1]
    assert ELLIPSIS in lines[1] and ELLIPSIS not in lines[2]
    assert len(lines) == 3, "no cell wraps onto a second line"


def test_newlines_in_a_value_stay_on_one_line() -> None:
    lines = render(["NAME", "COMMAND"], [["a", "echo one\necho two\tend"]], None)
    assert lines[1] == "a     echo one\\necho two\\tend"


def test_fit_never_goes_below_the_floors() -> None:
    assert fit([10, 50, 5], [4, 6, 5], 30) == [10, 15, 5]
    assert fit([10, 50, 5], [4, 6, 5], 10) == [4, 6, 5]
    assert fit([3, 4], [1, 1], 100) == [3, 4]


def test_keep_columns_are_cut_only_when_nothing_else_can_give() -> None:
    lines = render(HEADERS, ROWS, 60, keep=("RUN ID", "TOKEN"))
    assert all(cell_len(line) <= 60 for line in lines), lines
    assert lines[1].startswith("20260101T000000Z-abcdef  ") and lines[1].endswith("123456789")
    squeezed = render(HEADERS, ROWS, 30, keep=("RUN ID", "TOKEN"))
    assert ELLIPSIS in squeezed[1].split()[0], "at last the kept columns give too"

"""The one-row-per-N text table the W1 harnesses print (etcron's and the peers').

No imports beyond the standard library: the peers' venvs use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Result = dict[str, Any]
Column = tuple[str, int, Callable[[Result], Any]]
"""(header, width, the cell's value from one result; None prints as "-")."""


def field(key: str) -> Callable[[Result], Any]:
    return lambda r: r.get(key)


def cpu_ms(key: str) -> Callable[[Result], Any]:
    """A ``cpu_ms_per_run`` entry."""
    return lambda r: r.get("cpu_ms_per_run", {}).get(key)


def w1_columns(lag_width: int = 8) -> list[Column]:
    """N, fires expected and seen, duplicates, misses, lag p50/p99/max."""
    return [
        ("N", 5, field("jobs")),
        ("expect", 7, field("fires_expected")),
        ("seen", 7, field("fires_seen")),
        ("dup", 4, field("duplicates")),
        ("miss", 6, field("misses")),
        ("lag p50", lag_width, lambda r: r["lag_ms"]["p50"]),
        ("lag p99", lag_width, lambda r: r["lag_ms"]["p99"]),
        ("lag max", lag_width, lambda r: r["lag_ms"]["max"]),
    ]


def render(columns: Sequence[Column], results: Sequence[Result], note: str) -> str:
    """A header line, one line per result, then ``note``."""

    def line(cells: Sequence[Any]) -> str:
        return " ".join(
            f"{'-' if v is None else v!s:>{w}}" for v, (_, w, _) in zip(cells, columns, strict=True)
        )

    rows = [line([head for head, _, _ in columns])]
    rows += [line([get(r) for _, _, get in columns]) for r in results]
    rows.append(note)
    return "\n".join(rows)

"""Plain-text tables: whole values in a pipe, fitted to the screen on a terminal.

- ``width=None`` (stdout is not a terminal, or ``-o wide``): every value in
  full, columns padded to their widest value, two spaces apart, one row per
  line, so ``grep`` and ``awk`` see whole values (as ``kubectl get`` prints).
- ``width=N`` (a terminal): when the rows are wider than ``N``, the widest
  columns give up width first (never below their header's width), the
  ``keep`` columns (ids, status) only once the others are down to their
  headers; a cell that no longer fits ends with ``…``. A cell never wraps
  onto a second line.

A newline or tab inside a value (a multi-line ``shell:``) is shown as ``\\n`` /
``\\t``, so a row stays one line.

``paint`` (a terminal with colours only) maps a column's header to a function
that gives a cell's SGR colour code (``"32"``) or None; the code wraps the
value, not its padding, so the columns stay aligned.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from rich.cells import cell_len, set_cell_size

GAP = "  "
ELLIPSIS = "…"


def _clean(value: str) -> str:
    return value.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def fit(widths: Sequence[int], floors: Sequence[int], budget: int) -> list[int]:
    """Shrink the widest columns, one cell at a time, until the sum fits ``budget``.

    No column goes below its floor; if the floors alone exceed the budget, the
    result is the floors (the line is then wider than the screen).
    """
    out = list(widths)
    excess = sum(out) - budget
    while excess > 0:
        shrinkable = [i for i, w in enumerate(out) if w > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: (out[i], i))
        out[widest] -= 1
        excess -= 1
    return out


def _cell(text: str, width: int, last: bool) -> str:
    size = cell_len(text)
    if size > width:
        text = set_cell_size(text, max(width - 1, 0)) + ELLIPSIS
    elif not last:
        text += " " * (width - size)
    return text


Paint = Mapping[str, Callable[[str], str | None]]


def _painted(text: str, code: str | None) -> str:
    if not code:
        return text
    core = text.rstrip(" ")
    return f"\x1b[{code}m{core}\x1b[0m{text[len(core) :]}"


def render(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int | None,
    keep: Collection[str] = (),
    paint: Paint | None = None,
) -> list[str]:
    """The table as lines (header first); see the module docstring for ``width``."""
    cells = [[_clean(str(c)) for c in row] for row in rows]
    widths = [
        max([cell_len(h), *(cell_len(row[i]) for row in cells)]) for i, h in enumerate(headers)
    ]
    if width is not None:
        budget = width - len(GAP) * (len(headers) - 1)
        floors = [cell_len(h) for h in headers]
        kept = [w if h in keep else f for h, w, f in zip(headers, widths, floors, strict=True)]
        widths = fit(fit(widths, kept, budget), floors, budget)
    last = len(headers) - 1
    painters = [(paint or {}).get(h) for h in headers]
    lines = [GAP.join(_cell(h, widths[i], i == last) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        parts = []
        for i, c in enumerate(row):
            text = _cell(c, widths[i], i == last)
            painter = painters[i]
            parts.append(_painted(text, painter(c)) if painter else text)
        lines.append(GAP.join(parts).rstrip())
    return lines

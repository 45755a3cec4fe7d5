"""Durations ("30s", "5m", "1h30m", "500ms") and sizes ("1MiB", "512KiB", "10MB").

Durations
    A number is seconds (``30``, ``1.5``). A string is either a bare number of
    seconds (``"30"``) or one or more ``<number><unit>`` parts written without
    spaces, largest first or not, e.g. ``"1h30m"``, ``"1.5s"``, ``"500ms"``.
    Units: ``ms``, ``s``, ``m`` (minutes), ``h``, ``d`` (24 h), ``w`` (7 d).
    Negative, empty, non-finite (also by overflow: ``"1e400s"`` is not a
    duration, ``"9...9s"`` with 400 nines is too large) and unparseable values
    raise :class:`ValueError`, whose message quotes at most 64 characters.

Sizes
    An integer is bytes. A string is ``<number>[unit]``: ``B``; decimal ``KB``,
    ``MB``, ``GB`` (1000-based, also ``K``, ``M``, ``G``); binary ``KiB``,
    ``MiB``, ``GiB`` (1024-based). Case-insensitive; the result is rounded down
    to whole bytes. Sizes of 2**63 bytes or more are refused (no float overflow
    on the way: ``"9" * 400 + "MiB"`` is a clear :class:`ValueError`).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from scheduler.limits import quote

__all__ = ["format_duration", "parse_duration", "parse_size"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d|w)")
_SIZES = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}  # fmt: skip
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_EXPECTED = "expected a duration like 30s, 5m, 2h, 1h30m or 500ms"
_EXPECTED_SIZE = "expected a size like 100, 512KiB, 1MiB or 10MB"
_MAX_SIZE = 2**63  # exclusive; no size of interest comes near it


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number of seconds or a string like ``"1h30m"``.

    >>> parse_duration("1h30m"), parse_duration("500ms"), parse_duration(5)
    (5400.0, 0.5, 5.0)
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{_EXPECTED} (got {quote(value)})")
    if isinstance(value, int | float):
        try:
            seconds = float(value)  # an int too large for a float overflows here
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{_EXPECTED}, not negative or infinite (got {quote(value)})")
        return seconds
    text = value.strip().lower()
    if text.startswith("-"):
        raise ValueError(f"{_EXPECTED}, not negative (got {quote(value)})")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        total = float(text)
    else:
        pos, total = 0, 0.0
        while m := _PART.match(text, pos):  # anchored: linear, also on long junk
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            raise ValueError(f"{_EXPECTED} (got {quote(value)})")
    if not math.isfinite(total):
        raise ValueError(f"{_EXPECTED}; {quote(value)} is too large")
    return total


def format_duration(seconds: float) -> str:
    """The shortest-ish string that :func:`parse_duration` reads back.

    >>> format_duration(90), format_duration(0.5), format_duration(5400), format_duration(0)
    ('1m30s', '500ms', '1h30m', '0s')
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite duration >= 0 (got {quote(seconds)})")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{_trim(seconds * 1000)}ms"
    out = ""
    rest = round(seconds, 3)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            count = int(rest // size)
            out += f"{count}{unit}"
            rest = round(rest - count * size, 3)
    if rest:
        out += f"{_trim(rest)}s"
    return out


def _trim(number: float) -> str:
    """``1.5`` -> ``"1.5"``, ``2.0`` -> ``"2"`` (at most 3 decimals)."""
    text = f"{number:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def parse_size(value: str | int) -> int:
    """Bytes from an integer or a string like ``"100"``, ``"512KiB"``, ``"1MiB"``, ``"10MB"``.

    >>> parse_size("1MiB"), parse_size("10MB"), parse_size(100)
    (1048576, 10000000, 100)
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{_EXPECTED_SIZE} (got {quote(value)})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{_EXPECTED_SIZE}, not negative (got {quote(value)})")
        size = value
    else:
        m = _SIZE_RE.fullmatch(value.strip().lower())
        if not m or m.group(2) not in _SIZES:
            raise ValueError(f"{_EXPECTED_SIZE} (got {quote(value)})")
        exact = Decimal(m.group(1)) * _SIZES[m.group(2)]  # exact: no float overflow
        size = int(exact) if exact < _MAX_SIZE else _MAX_SIZE
    if size >= _MAX_SIZE:
        raise ValueError(f"{_EXPECTED_SIZE}; {quote(value)} is too large")
    return size

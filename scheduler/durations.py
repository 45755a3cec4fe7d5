"""Durations ("30s", "5m", "1h30m", "500ms") and sizes ("1MiB", "512KiB")."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZES = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_EXPECTED = "expected a duration like 30s, 5m, 2h, 1h30m or 500ms"


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number of seconds or a string of number+unit parts."""
    if isinstance(value, bool):
        raise ValueError(f"{_EXPECTED} (got {value!r})")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{_EXPECTED}, not negative (got {value!r})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{_EXPECTED} (got {value!r})")
    text = value.strip().lower()
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if number >= 0 and text:
        return number
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{_EXPECTED} (got {value!r})")
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = "", round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


def parse_size(value: str | int) -> int:
    """Bytes from an integer or a string like 100, 64KiB, 1MiB, 10MB."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 512KiB or 1MiB (got {value!r})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a size >= 0 (got {value})")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _SIZES:
        raise ValueError(f"expected a size like 512KiB or 1MiB (got {value!r})")
    return int(float(m.group(1)) * _SIZES[m.group(2).lower()])

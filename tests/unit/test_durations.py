"""parse_duration / format_duration / parse_size: good and bad tables."""

from __future__ import annotations

import pytest

from scheduler.durations import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("1s500ms", 1.5),
        (" 10s ", 10.0),
        ("2H", 7200.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_good(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", " ", "soon", "-5s", "-1", -1, -0.5, "5 s", "5x", "s", "1h 30m", "10sec", "1..5s",
     "ms", "5m-", float("inf"), float("nan"), "inf", "nan", True, None, [1]],
)  # fmt: skip
def test_parse_duration_bad(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 30s, 5m, 2h"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (0.001, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400 + 61, "1d1m1s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("seconds", [-1, float("inf"), float("nan")])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite duration"):
        format_duration(seconds)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (100, 100),
        ("100", 100),
        ("100B", 100),
        ("512KiB", 512 * 1024),
        ("1MiB", 1024 * 1024),
        ("1mib", 1024 * 1024),
        ("2GiB", 2 * 1024**3),
        ("10MB", 10_000_000),
        ("10 MB", 10_000_000),
        ("1k", 1000),
        ("1.5KiB", 1536),
    ],
)
def test_parse_size_good(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["", "lots", "-1", -1, "1XB", "MiB", "1 M i B", "1.2.3MB", True, None, 1.5]
)
def test_parse_size_bad(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size like"):
        parse_size(value)  # type: ignore[arg-type]

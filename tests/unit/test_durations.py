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
    "value",
    ["9" * 400 + "s", "9" * 400, "9" * 400 + "w", "1" + "0" * 310 + "ms", 10**400, "1e400s",
     "1e400", "Infinity", "-inf"],
)  # fmt: skip
def test_parse_duration_overflow_is_an_error_not_infinity(value: object) -> None:
    """Before: '9' * 400 + 's' parsed as inf, which a job stored as null."""
    with pytest.raises(ValueError, match="expected a duration like 30s") as info:
        parse_duration(value)  # type: ignore[arg-type]
    assert len(str(info.value)) < 200  # the input is not echoed whole


def test_parse_duration_does_not_echo_huge_input() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("5" * 1_000_000 + "x")
    assert len(str(info.value)) < 200
    assert "'5555" in str(info.value)


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


@pytest.mark.parametrize(
    "value",
    ["9" * 400 + "MiB", "9" * 400, "9" * 20 + "GiB", 2**63, pytest.param(10**5000, id="10**5000"),
     "9223372036854775808", "8589934592GiB"],
)  # fmt: skip
def test_parse_size_too_large_is_a_clear_error(value: object) -> None:
    """Before: '9' * 400 + 'MiB' raised OverflowError (a traceback in `etcron validate`)."""
    with pytest.raises(ValueError, match="expected a size like") as info:
        parse_size(value)  # type: ignore[arg-type]
    assert len(str(info.value)) < 200


def test_parse_size_is_exact_up_to_its_bound() -> None:
    assert parse_size(2**63 - 1) == 2**63 - 1
    assert parse_size("8589934591GiB") == 8589934591 * 1024**3  # just under 2**63
    assert parse_size("0.5KiB") == 512

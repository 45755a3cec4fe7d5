"""Strict JSON for request bodies, and clipped quoting of input in messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.clip import clip, quote
from scheduler.durations import parse_duration, parse_size
from scheduler.master.strict_json import json_problem


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b"[Infinity]", "Infinity is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "1e400 is too large"),
        (b'{"a": "\\ud800"}', "lone surrogate (\\ud800)"),
        (b'{"\\udfff": 1}', "lone surrogate (\\udfff)"),
        (b'{"a": ["x", {"b": "ok \\udc00"}]}', "lone surrogate (\\udc00)"),
        (b'{"a": "\xed\xa0\x80"}', "lone surrogate (\\ud800)"),  # a surrogate in UTF-8 bytes
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"{", "Expecting property name"),
        (b"", "Expecting value"),
    ],
)
def test_not_strict_json_is_named(body: bytes, expected: str) -> None:
    problem = json_problem(body)
    assert problem is not None and expected in problem
    assert len(problem) < 200


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"a": [1, 2.5, -3e10, "\\u00e9\\ud83d\\ude00", null, true]}',
        '{"a": "é😀"}'.encode(),
    ],
)
def test_strict_json_passes(body: bytes) -> None:
    assert json_problem(body) is None


_SURROGATES_TOO = st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=())
_ANY_TEXT = st.text() | st.text(_SURROGATES_TOO)


def _has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    return isinstance(value, list) and any(_has_surrogate(v) for v in value)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _ANY_TEXT, st.lists))
def test_json_is_refused_exactly_when_python_would_fail_later(value: object) -> None:
    body = json.dumps(value).encode()  # NaN, Infinity and "\ud800" escapes as Python writes them
    problem = json_problem(body)
    # "later" is after the body is parsed: a lone high and low surrogate written
    # side by side come back as one valid pair (U+10000), which is fine
    parsed = json.loads(body)
    try:
        json.dumps(parsed, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        assert problem is not None
        assert ("surrogate" in problem) == _has_surrogate(parsed) or "JSON number" in problem
    else:
        assert problem is None


def test_a_surrogate_pair_written_as_two_escapes_is_one_character() -> None:
    assert json_problem(json.dumps("\ud800\udc00").encode()) is None
    assert json_problem(json.dumps("\ud800").encode()) is not None


def test_clip_and_quote_bound_any_input() -> None:
    long = "x" * 100_000
    assert clip(long) == "x" * 64 + "…" and clip("short") == "short"
    assert quote(long) == repr("x" * 64 + "…")
    assert len(quote(list(range(100_000)))) <= 65
    assert len(quote({"k" * 1000: ["v" * 1000] * 1000})) <= 65
    assert quote(10**5000) == "<a int too long to show>"


def test_duration_and_size_errors_are_short_and_never_infinite() -> None:
    for bad in ("9" * 400 + "s", "9" * 400, 10**400):
        with pytest.raises(ValueError, match=r"infinite|too large") as info:
            parse_duration(bad)
        assert len(str(info.value)) < 200
    with pytest.raises(ValueError, match=r"infinite|too large"):
        parse_size("9" * 400 + "MiB")
    with pytest.raises(ValueError) as info:
        parse_duration("x" * 100_000)
    assert len(str(info.value)) < 200

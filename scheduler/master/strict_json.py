"""Is a request body strict JSON (RFC 8259)? Python's ``json`` is lenient.

``json.loads`` accepts what cannot be stored or answered later: ``NaN`` and
``Infinity``, numbers that overflow to ``inf`` (``1e400``), lone UTF-16
surrogates (``"\\ud800"``, or the bytes ``ED A0 80``) that no UTF-8 encoder
accepts. :func:`json_problem` names the first such thing, so the master refuses
the body with a 4xx instead of failing later with a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from scheduler.clip import clip


class _NotStrict(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _NotStrict(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStrict(f"the number {clip(text, 32)} is too large")
    return value


def _surrogate(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate (\\u{ord(text[exc.start]):04x}) in {clip(repr(text), 32)}"
    return None


def _first_surrogate(value: Any) -> str | None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _surrogate(item)
            if found:
                return found
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def json_problem(body: bytes) -> str | None:
    """``None`` if ``body`` is strict JSON, else what is wrong, in a short sentence."""
    try:
        value = json.loads(body, parse_constant=_constant, parse_float=_finite)
    except _NotStrict as exc:
        return str(exc)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError:
        return "the body is not UTF-8 text"
    except RecursionError:
        return "nested too deeply"
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return clip(str(exc).split(":")[0], 80)
    found = _first_surrogate(value)
    return f"a string contains {found}" if found else None

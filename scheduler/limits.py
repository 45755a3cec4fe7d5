"""Bounds on what a job spec may hold, and plain messages when one is passed.

The numbers are the defaults of docs/jobs.md ("Limits"). They are checked when
a spec is *written*: by the API (PUT, apply), by ``etcron validate`` and
``etcron apply``. A spec read back from etcd is not held to them (see
:meth:`scheduler.model.JobSpec.from_json`), so a job stored before a limit
existed stays listable, readable and runnable.

Messages name the value and the limit ("description is 5000 characters; at
most 4096") and never quote more than :data:`QUOTE_CHARS` characters of input.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_ARGS",
    "MAX_ARG_CHARS",
    "MAX_CHARS",
    "MAX_DURATION",
    "MAX_ENV",
    "MAX_ENV_KEY",
    "MAX_ENV_VALUE",
    "MAX_LABELS",
    "MAX_LABEL_KEY",
    "MAX_LABEL_VALUE",
    "MAX_OUTPUT_LIMIT",
    "MAX_SPEC_BYTES",
    "QUOTE_CHARS",
    "check_count",
    "check_text",
    "format_size",
    "quote",
]

MAX_SPEC_BYTES = 64 * 1024
"""A spec's compact JSON (as stored in etcd); the master's ``master.max_spec_bytes``."""
MAX_OUTPUT_LIMIT = 16 * 1024 * 1024
"""Largest ``output_limit`` a job may ask for (workers also cap it at run time)."""
MAX_DURATION = 365 * 86400.0
"""Longest ``timeout``, ``retry_backoff``, ``starting_deadline``, ``keep_for``, ``@every``."""

MAX_CHARS = {
    "schedule": 256,
    "timezone": 64,
    "shell": 32 * 1024,
    "workdir": 4096,
    "user": 256,
    "description": 4096,
}
"""Longest value, in characters, of each plain string field (``name``: 63, by its rule)."""
MAX_ARGS = 1024
MAX_ARG_CHARS = 32 * 1024
MAX_ENV = 256
MAX_ENV_KEY = 256
MAX_ENV_VALUE = 32 * 1024
MAX_LABELS = 64
"""Entries of ``selector`` and of ``labels``."""
MAX_LABEL_KEY = 256
MAX_LABEL_VALUE = 1024
QUOTE_CHARS = 64


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` of a string, cut to ``limit`` characters of it (``...`` marks the cut)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}..."
    if isinstance(value, int) and value.bit_length() > 3 * limit:  # repr may refuse huge ints
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."


def check_text(what: str, value: str, max_chars: int) -> None:
    """ValueError when ``value`` is longer than ``max_chars`` or holds a NUL byte."""
    if len(value) > max_chars:
        raise ValueError(f"{what} is {len(value)} characters; at most {max_chars}")
    at = value.find("\0")
    if at >= 0:
        raise ValueError(f"{what} contains a NUL byte (at character {at + 1}); none is allowed")


def check_count(what: str, value: Any, most: int, unit: str) -> None:
    """ValueError when the list or mapping ``value`` has more than ``most`` entries."""
    if isinstance(value, list | dict) and len(value) > most:
        raise ValueError(f"{what} has {len(value)} {unit}; at most {most}")


def format_size(n: int) -> str:
    """``16777216`` -> ``"16 MiB"``; ``1500`` -> ``"1500 bytes"``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"

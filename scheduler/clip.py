"""Bounded quoting of input in messages.

A message that quotes what a client or a file sent shows at most ``LIMIT``
characters of it, then ``…``: a 100,000-character job name is quoted as its
first 64 characters, so an error stays short however large the input was.
"""

from __future__ import annotations

import reprlib

LIMIT = 64
ELLIPSIS = "…"

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = LIMIT


def clip(text: str, limit: int = LIMIT) -> str:
    """``text`` itself, or its first ``limit`` characters and ``…``."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def quote(value: object, limit: int = LIMIT) -> str:
    """``repr(value)`` for a message: a string is clipped before quoting; any
    other value gets a bounded repr (nested containers shortened), clipped."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    try:
        return clip(_REPR.repr(value), limit)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"<a {type(value).__name__} too long to show>"

"""Validation errors in plain words: ``(field path, message)`` pairs.

Pydantic's own messages say "Input should be ..."; these say what the field
must be, name the field by its dotted path (``env.FOO``, ``command.0``) and
show a bounded excerpt of the bad value (YAML aliases make huge inputs cheap).
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from scheduler.limits import QUOTE_CHARS, quote

COMMAND_OR_SHELL = "command_or_shell"
"""The error type of the rule "exactly one of command and shell" (reported on ``command``)."""


def validation_messages(err: ValidationError, fields: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(field path, message) pairs, e.g. ``("timeout", "expected a duration like 30s ...")``.

    Paths join nested locations with dots (``env.FOO``, ``command.0``). The
    command/shell rule is reported on ``command``; a JSON syntax error on "".
    An unknown top-level field close to one of ``fields`` gets a "did you mean".
    """
    out = []
    for e in err.errors():
        kind = e["type"]
        # a dict key's own error is located at ("env", KEY, "[key]"): say "env.KEY"
        path = ".".join(_part(p) for p in e["loc"] if p != "[key]")
        msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == COMMAND_OR_SHELL:
            path = "command"
        elif kind == "extra_forbidden":
            msg = "unknown field"
            close = difflib.get_close_matches(str(e["loc"][-1]), fields, n=1)
            if len(e["loc"]) == 1 and close:
                msg += f" (did you mean {close[0]!r}?)"
        elif kind == "missing":
            msg = "missing required field"
        elif kind == "json_invalid":
            msg = f"not valid JSON ({e.get('ctx', {}).get('error', 'syntax error')})"
        else:
            msg = _plain(kind, e.get("ctx") or {}, msg)
            if kind != "value_error" and "(got " not in msg and "input" in e:
                msg = f"{msg} (got {_short(e['input'])})"
        out.append((path, msg))
    return out


_PLAIN = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping (name: value)",
    "list_type": "must be a list",
    "less_than_equal": "must be at most {le}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "greater_than": "must be more than {gt}",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
    "string_too_long": "must be at most {max_length} characters",
    "too_long": "must have at most {max_length} items",
}
"""Plain wording for pydantic's error types (its own says "Input should be ...")."""


def _plain(kind: str, ctx: dict[str, Any], fallback: str) -> str:
    template = _PLAIN.get(kind)
    if template is None:
        return fallback
    try:
        return template.format(**ctx)
    except (KeyError, IndexError, ValueError):
        return fallback


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 40


def _part(loc: str | int) -> str:
    """One part of an error's location; a long key (huge input) is cut."""
    text = str(loc)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."


def _short(value: Any) -> str:
    """A bounded repr: YAML aliases can make huge nested inputs cheaply."""
    if isinstance(value, int) and not isinstance(value, bool):
        return quote(value, 40)  # repr() refuses ints of more than 4300 digits
    return _REPR.repr(value)

"""The field types of a job spec: durations, sizes, bounded text, resources,
concurrency (used by :class:`scheduler.model.JobSpec`).

Limits (:mod:`scheduler.limits`) apply when a spec is written, never when it is
read back from etcd: a validation with ``{STORED: True}`` in its context skips
them (:func:`is_writing`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from scheduler.durations import format_duration, parse_duration, parse_size
from scheduler.limits import (
    MAX_ARG_CHARS,
    MAX_CHARS,
    MAX_ENV_VALUE,
    MAX_LABEL_VALUE,
    check_text,
    format_size,
)

STORED = "stored"
"""Validation context key: true when the spec is read back from etcd (no limits)."""


def is_writing(info: ValidationInfo) -> bool:
    """True unless the spec is read back from etcd (limits apply on write only)."""
    ctx = info.context
    return not (isinstance(ctx, dict) and ctx.get(STORED))


def _duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)


def _size(value: Any) -> Any:
    return None if value is None else parse_size(value)


def _text(max_chars: int, role: str = "") -> AfterValidator:
    """A string check: at most ``max_chars`` characters and no NUL byte (when writing)."""

    def check(value: str, info: ValidationInfo) -> str:
        if is_writing(info):
            check_text(f"{info.field_name} {role}".strip(), value, max_chars)
        return value

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(_duration)]
OptDuration = Annotated[float | None, BeforeValidator(_duration)]
OptSize = Annotated[int | None, BeforeValidator(_size)]
Arg = Annotated[str, _text(MAX_ARG_CHARS, "argument")]
EnvValue = Annotated[str, _text(MAX_ENV_VALUE, "value")]
LabelValue = Annotated[str, _text(MAX_LABEL_VALUE, "value")]


def text_of(field: str) -> AfterValidator:
    return _text(MAX_CHARS[field])


def seconds_text(seconds: float) -> str:
    return format_duration(seconds) if seconds < 1e12 else f"{seconds:.3g}s"


class Concurrency(StrEnum):
    """What a tick does while the previous run of the job is still running."""

    FORBID = "forbid"  # skip the tick (recorded as skipped)
    ALLOW = "allow"  # run alongside
    REPLACE = "replace"  # kill the running one, then run


MAX_MEMORY = 1024**4
"""1 TiB: a memory limit above any host's (a typo such as ``512Gi`` for ``512Mi`` stays visible)."""


class Resources(BaseModel):
    """Per-run limits, enforced with cgroups on the worker (workers/cgroups.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory: OptSize = None
    """Bytes (``512MiB``): the run is OOM-killed above it, and the record says so."""
    cpu: float | None = Field(default=None, gt=0, le=1024)
    """Cores (``0.5``: half of one core), as a CFS quota."""
    pids: int | None = Field(default=None, ge=1, le=1_000_000)
    """Processes and threads the run may have at once."""

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | None) -> int | None:
        if v is not None and not 1024 * 1024 <= v <= MAX_MEMORY:
            raise ValueError(f"memory is {format_size(v)}; from 1MiB to {format_size(MAX_MEMORY)}")
        return v

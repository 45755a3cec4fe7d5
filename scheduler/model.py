"""The job spec: what a master writes under ``jobs/<name>`` and workers run.

Rules:

- Strict: unknown fields are errors (a typo never silently changes a job), and
  a spec is immutable once built.
- ``name`` is a DNS label: 1-63 of ``a-z 0-9 -``, starting and ending with a
  letter or digit (no ``/``, spaces or uppercase).
- Exactly one of ``command`` (an argv list, run without a shell) and ``shell``
  (a string run by ``/bin/sh -c``).
- Durations (``timeout``, ``retry_backoff``, ``starting_deadline``,
  ``keep_for``) accept numbers of seconds or strings like ``30s``, ``5m``,
  ``1h30m``, and are stored as float seconds. ``output_limit`` accepts bytes or
  ``512KiB``, ``1MiB``, ``10MB``.
- Stored in etcd as compact JSON (:meth:`JobSpec.to_json`): fields in
  declaration order, fields left at their defaults omitted.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from scheduler.clip import quote
from scheduler.durations import parse_duration, parse_size
from scheduler.schedule import Schedule, validate_timezone

__all__ = [
    "Concurrency",
    "JobSpec",
    "spec_fields",
    "validation_messages",
]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMMAND_OR_SHELL = "command_or_shell"


def _duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)


def _size(value: Any) -> Any:
    return None if value is None else parse_size(value)


Duration = Annotated[float, BeforeValidator(_duration)]
OptDuration = Annotated[float | None, BeforeValidator(_duration)]
OptSize = Annotated[int | None, BeforeValidator(_size)]


class Concurrency(StrEnum):
    """What a tick does while the previous run of the job is still running."""

    FORBID = "forbid"  # skip the tick (recorded as skipped)
    ALLOW = "allow"  # run alongside
    REPLACE = "replace"  # kill the running one, then run


class JobSpec(BaseModel):
    """One job. See docs/jobs.md for every field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    schedule: str
    timezone: str = "UTC"
    command: list[str] | None = None
    shell: str | None = Field(default=None, validate_default=True)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    timeout: OptDuration = None
    concurrency: Concurrency = Concurrency.FORBID
    retries: int = Field(default=0, ge=0, le=10)
    retry_backoff: Duration = 10.0
    starting_deadline: OptDuration = None
    selector: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    suspend: bool = False
    description: str = ""
    output_limit: OptSize = None
    keep_succeeded: int | None = Field(default=None, ge=0)
    keep_failed: int | None = Field(default=None, ge=0)
    keep_for: OptDuration = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"{quote(v)} is not a valid job name: use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (no '/', spaces or uppercase)"
            )
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        Schedule.parse(v)  # ScheduleError is a ValueError with the reason
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        validate_timezone(v)
        return v

    @field_validator("command", mode="before")
    @classmethod
    def _command_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError(
                'expected a list of arguments, like ["df", "-h"] '
                "(for a shell command line use 'shell' instead)"
            )
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0].strip()):
            raise ValueError(
                'expected a non-empty list of arguments, like ["/usr/local/bin/backup", "--all"]'
            )
        return v

    @field_validator("shell")
    @classmethod
    def _shell(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a non-empty shell command, like 'df -h / | tail -1'")
        return v

    @field_validator("workdir", "user")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v:
            raise ValueError("must not be empty (leave it out instead)")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not ENV_RE.match(key):
                raise ValueError(
                    f"{quote(key)} is not a valid environment variable name "
                    "(letters, digits and '_', not starting with a digit)"
                )
        return v

    @field_validator("timeout", "starting_deadline", "keep_for", "output_limit")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be greater than 0 (leave it out for no limit)")
        return v

    @field_validator("shell")
    @classmethod
    def _one_of_command_shell(cls, v: str | None, info: ValidationInfo) -> str | None:
        if "command" not in info.data:
            return v  # command itself is invalid and reported
        if info.data["command"] is not None and v is not None:
            raise PydanticCustomError(
                _COMMAND_OR_SHELL,
                "both 'command' and 'shell' are set; set exactly one "
                "('command' is an argv list, 'shell' a string for /bin/sh -c)",
            )
        if info.data["command"] is None and v is None:
            raise PydanticCustomError(
                _COMMAND_OR_SHELL,
                "missing 'command' or 'shell'; set exactly one "
                "('command' is an argv list, 'shell' a string for /bin/sh -c)",
            )
        return v

    def schedule_obj(self) -> Schedule:
        """The parsed schedule (cached by expression)."""
        return Schedule.parse(self.schedule)

    def zone(self) -> ZoneInfo:
        """The job's time zone (cached by name)."""
        return validate_timezone(self.timezone)

    def to_json(self) -> bytes:
        """Compact JSON, deterministic: declaration order, defaults omitted."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> JobSpec:
        """Parse :meth:`to_json` output; ValueError naming every problem."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            msgs = "; ".join(
                f"{field}: {msg}" if field else msg for field, msg in validation_messages(exc)
            )
            raise ValueError(f"invalid job spec: {msgs}") from exc


def validation_messages(err: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) pairs, e.g. ``("timeout", "expected a duration like 30s ...")``.

    Paths join nested locations with dots (``env.FOO``, ``command.0``). The
    command/shell rule is reported on ``command``; a JSON syntax error on "".
    """
    out = []
    for e in err.errors():
        kind = e["type"]
        path = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == _COMMAND_OR_SHELL:
            path = "command"
        elif kind == "extra_forbidden":
            msg = "unknown field"
            close = difflib.get_close_matches(str(e["loc"][-1]), spec_fields(), n=1)
            if len(e["loc"]) == 1 and close:
                msg += f" (did you mean {close[0]!r}?)"
        elif kind == "missing":
            msg = "missing required field"
        elif kind == "json_invalid":
            msg = f"not valid JSON ({e.get('ctx', {}).get('error', 'syntax error')})"
        elif kind != "value_error" and "(got " not in msg and "input" in e:
            msg = f"{msg} (got {_short(e['input'])})"
        out.append((path, msg))
    return out


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 40


def _short(value: Any) -> str:
    """A bounded repr: YAML aliases can make huge nested inputs cheaply."""
    return _REPR.repr(value)


def spec_fields() -> list[str]:
    """The names of every JobSpec field, in declaration order."""
    return list(JobSpec.model_fields)

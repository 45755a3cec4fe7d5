"""The job spec: what a master writes under ``jobs/<name>`` and workers run.

Strict: unknown fields are errors, so a typo never silently changes a job.
Durations accept numbers of seconds or strings like ``30s``, ``5m``, ``2h``;
sizes accept ``512KiB``, ``1MiB``. Stored in etcd as compact JSON with
durations in seconds.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler.durations import parse_duration, parse_size
from scheduler.schedule import Schedule, validate_timezone

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class Concurrency(StrEnum):
    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    schedule: str
    timezone: str = "UTC"
    command: list[str] | None = None
    shell: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    timeout: Duration | None = None
    concurrency: Concurrency = Concurrency.FORBID
    retries: int = Field(default=0, ge=0, le=10)
    retry_backoff: Duration = 10.0
    starting_deadline: Duration | None = None
    selector: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    suspend: bool = False
    description: str = ""
    output_limit: Size | None = None
    keep_succeeded: int | None = Field(default=None, ge=0)
    keep_failed: int | None = Field(default=None, ge=0)
    keep_for: Duration | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid job name: use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (no '/', spaces or uppercase)"
            )
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        Schedule.parse(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        validate_timezone(v)
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0]):
            raise ValueError(
                'command must be a non-empty list of arguments, like ["/bin/backup", "--all"]'
            )
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not ENV_RE.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return v

    @field_validator("timeout", "retry_backoff")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be longer than 0s")
        return v

    @model_validator(mode="after")
    def _one_of_command_shell(self) -> JobSpec:
        if (self.command is None) == (self.shell is None):
            raise ValueError(
                "set exactly one of 'command' (an argv list) or 'shell' (a string for /bin/sh -c)"
            )
        return self

    def schedule_obj(self) -> Schedule:
        return Schedule.parse(self.schedule)

    def zone(self) -> ZoneInfo:
        return validate_timezone(self.timezone)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> JobSpec:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            msgs = "; ".join(f"{field or 'spec'}: {msg}" for field, msg in validation_messages(exc))
            raise ValueError(f"invalid job spec: {msgs}") from exc


def validation_messages(err: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) pairs, e.g. ("timeout", "expected a duration like 30s ...")."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "json_invalid":
            msg = f"not valid JSON ({e.get('ctx', {}).get('error', '')})"
        out.append((loc, msg))
    return out


def spec_fields() -> list[str]:
    return list(JobSpec.model_fields)

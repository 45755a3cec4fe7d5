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
- Limits (:mod:`scheduler.limits`, docs/jobs.md "Limits"): lengths, counts, no
  NUL byte in any string, ``output_limit`` at most 16 MiB, durations at most a
  year, the JSON at most 64 KiB (``max_spec_bytes`` in the validation context
  overrides it). They apply when a spec is written: every validation except
  :meth:`JobSpec.from_json`, which reads etcd and tolerates specs stored before
  a limit existed (limits apply on write; reading never rejects a value that
  the rules of its time accepted).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from scheduler import spec_errors
from scheduler.limits import (
    MAX_ARGS,
    MAX_DURATION,
    MAX_ENV,
    MAX_ENV_KEY,
    MAX_LABEL_KEY,
    MAX_LABELS,
    MAX_OUTPUT_LIMIT,
    MAX_SPEC_BYTES,
    check_count,
    check_text,
    format_size,
    quote,
)
from scheduler.notify.rules import MAX_RULES, NotifyRule
from scheduler.schedule import Schedule, validate_timezone
from scheduler.spec_errors import COMMAND_OR_SHELL
from scheduler.spec_types import (
    STORED,
    Arg,
    Concurrency,
    Duration,
    EnvValue,
    LabelValue,
    OptDuration,
    OptSize,
    Resources,
    is_writing,
    seconds_text,
    text_of,
)

__all__ = [
    "STORED",
    "Concurrency",
    "JobSpec",
    "Resources",
    "spec_fields",
    "validation_messages",
]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class JobSpec(BaseModel):
    """One job. See docs/jobs.md for every field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    schedule: Annotated[str, text_of("schedule")]
    timezone: Annotated[str, text_of("timezone")] = "UTC"
    command: list[Arg] | None = None
    shell: Annotated[str, text_of("shell")] | None = Field(default=None, validate_default=True)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    workdir: Annotated[str, text_of("workdir")] | None = None
    user: Annotated[str, text_of("user")] | None = None
    timeout: OptDuration = None
    concurrency: Concurrency = Concurrency.FORBID
    retries: int = Field(default=0, ge=0, le=10)
    retry_backoff: Duration = 10.0
    starting_deadline: OptDuration = None
    selector: dict[str, LabelValue] = Field(default_factory=dict)
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    suspend: bool = False
    description: Annotated[str, text_of("description")] = ""
    output_limit: OptSize = None
    resources: Resources | None = None
    keep_succeeded: int | None = Field(default=None, ge=0)
    keep_failed: int | None = Field(default=None, ge=0)
    keep_for: OptDuration = None
    notify: list[NotifyRule] | None = None
    """None: ``notify.defaults`` of the config apply; ``[]``: no notifications."""

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
    def _schedule(cls, v: str, info: ValidationInfo) -> str:
        every = Schedule.parse(v).every  # ScheduleError is a ValueError with the reason
        if every is not None and every > MAX_DURATION and is_writing(info):
            raise ValueError(f"@every interval is {seconds_text(every)}; at most 365d (one year)")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        validate_timezone(v)
        return v

    @field_validator("command", "env", "selector", "labels", mode="before")
    @classmethod
    def _counts(cls, v: Any, info: ValidationInfo) -> Any:
        """Counted before the entries are validated one by one."""
        if is_writing(info):
            if info.field_name == "command":
                check_count("command", v, MAX_ARGS, "arguments")
            else:
                most = MAX_ENV if info.field_name == "env" else MAX_LABELS
                check_count(str(info.field_name), v, most, "entries")
        return v

    @field_validator("notify", mode="before")
    @classmethod
    def _notify_count(cls, v: Any, info: ValidationInfo) -> Any:
        if is_writing(info):
            check_count("notify", v, MAX_RULES, "rules")
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
    def _env(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for key in v:
            if is_writing(info) and len(key) > MAX_ENV_KEY:
                check_text(f"env name {quote(key, 20)}", key, MAX_ENV_KEY)
            if not ENV_RE.match(key):
                raise ValueError(
                    f"{quote(key)} is not a valid environment variable name "
                    "(letters, digits and '_', not starting with a digit)"
                )
        return v

    @field_validator("selector", "labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if is_writing(info):
            for key in v:
                check_text(f"{info.field_name} key {quote(key, 20)}", key, MAX_LABEL_KEY)
        return v

    @field_validator("timeout", "starting_deadline", "keep_for", "output_limit")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be greater than 0 (leave it out for no limit)")
        return v

    @field_validator("timeout", "retry_backoff", "starting_deadline", "keep_for")
    @classmethod
    def _at_most_a_year(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and v > MAX_DURATION and is_writing(info):
            raise ValueError(f"{info.field_name} is {seconds_text(v)}; at most 365d (one year)")
        return v

    @field_validator("output_limit")
    @classmethod
    def _output_limit(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v > MAX_OUTPUT_LIMIT and is_writing(info):
            raise ValueError(
                f"output_limit is {format_size(v)}; at most {format_size(MAX_OUTPUT_LIMIT)} "
                "(workers also cap it with worker.max_output_limit)"
            )
        return v

    @field_validator("shell")
    @classmethod
    def _one_of_command_shell(cls, v: str | None, info: ValidationInfo) -> str | None:
        if "command" not in info.data:
            return v  # command itself is invalid and reported
        if info.data["command"] is not None and v is not None:
            raise PydanticCustomError(
                COMMAND_OR_SHELL,
                "both 'command' and 'shell' are set; set exactly one "
                "('command' is an argv list, 'shell' a string for /bin/sh -c)",
            )
        if info.data["command"] is None and v is None:
            raise PydanticCustomError(
                COMMAND_OR_SHELL,
                "missing 'command' or 'shell'; set exactly one "
                "('command' is an argv list, 'shell' a string for /bin/sh -c)",
            )
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _spec_size(
        cls, data: Any, handler: ModelWrapValidatorHandler[JobSpec], info: ValidationInfo
    ) -> JobSpec:
        """The whole spec, as stored, within ``max_spec_bytes`` (context) or the default.

        A spec that is already built (nested in a response model) is not checked
        again: it may be one read from etcd.
        """
        if isinstance(data, JobSpec):
            return data
        spec = handler(data)
        if is_writing(info):
            ctx = info.context if isinstance(info.context, dict) else {}
            most = int(ctx.get("max_spec_bytes", MAX_SPEC_BYTES))
            size = len(spec.to_json())
            if size > most:
                raise ValueError(f"the job spec is {size} bytes as JSON; at most {most}")
        return spec

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
        """Parse :meth:`to_json` output (a value read from etcd); ValueError naming every problem.

        The limits of :mod:`scheduler.limits` are not applied: they bound what
        is written, and a job stored before one existed stays readable.
        """
        try:
            return cls.model_validate_json(data, context={STORED: True})
        except ValidationError as exc:
            msgs = "; ".join(
                f"{field}: {msg}" if field else msg for field, msg in validation_messages(exc)
            )
            raise ValueError(f"invalid job spec: {msgs}") from exc


def validation_messages(err: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) pairs for a job spec's errors (:mod:`scheduler.spec_errors`)."""
    return spec_errors.validation_messages(err, spec_fields())


def spec_fields() -> list[str]:
    """The names of every JobSpec field, in declaration order."""
    return list(JobSpec.model_fields)

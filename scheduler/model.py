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

import difflib
import re
import reprlib
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from scheduler.durations import format_duration, parse_duration, parse_size
from scheduler.limits import (
    MAX_ARG_CHARS,
    MAX_ARGS,
    MAX_CHARS,
    MAX_DURATION,
    MAX_ENV,
    MAX_ENV_KEY,
    MAX_ENV_VALUE,
    MAX_LABEL_KEY,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_OUTPUT_LIMIT,
    MAX_SPEC_BYTES,
    QUOTE_CHARS,
    check_count,
    check_text,
    format_size,
    quote,
)
from scheduler.notify.rules import MAX_RULES, NotifyRule
from scheduler.schedule import Schedule, validate_timezone

__all__ = [
    "STORED",
    "Concurrency",
    "JobSpec",
    "spec_fields",
    "validation_messages",
]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_COMMAND_OR_SHELL = "command_or_shell"
STORED = "stored"
"""Validation context key: true when the spec is read back from etcd (no limits)."""


def _writing(info: ValidationInfo) -> bool:
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
        if _writing(info):
            check_text(f"{info.field_name} {role}".strip(), value, max_chars)
        return value

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(_duration)]
OptDuration = Annotated[float | None, BeforeValidator(_duration)]
OptSize = Annotated[int | None, BeforeValidator(_size)]
Arg = Annotated[str, _text(MAX_ARG_CHARS, "argument")]
EnvValue = Annotated[str, _text(MAX_ENV_VALUE, "value")]
LabelValue = Annotated[str, _text(MAX_LABEL_VALUE, "value")]


def _chars(field: str) -> AfterValidator:
    return _text(MAX_CHARS[field])


def _seconds_text(seconds: float) -> str:
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


class JobSpec(BaseModel):
    """One job. See docs/jobs.md for every field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    schedule: Annotated[str, _chars("schedule")]
    timezone: Annotated[str, _chars("timezone")] = "UTC"
    command: list[Arg] | None = None
    shell: Annotated[str, _chars("shell")] | None = Field(default=None, validate_default=True)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    workdir: Annotated[str, _chars("workdir")] | None = None
    user: Annotated[str, _chars("user")] | None = None
    timeout: OptDuration = None
    concurrency: Concurrency = Concurrency.FORBID
    retries: int = Field(default=0, ge=0, le=10)
    retry_backoff: Duration = 10.0
    starting_deadline: OptDuration = None
    selector: dict[str, LabelValue] = Field(default_factory=dict)
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    suspend: bool = False
    description: Annotated[str, _chars("description")] = ""
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
        if every is not None and every > MAX_DURATION and _writing(info):
            raise ValueError(f"@every interval is {_seconds_text(every)}; at most 365d (one year)")
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
        if _writing(info):
            if info.field_name == "command":
                check_count("command", v, MAX_ARGS, "arguments")
            else:
                most = MAX_ENV if info.field_name == "env" else MAX_LABELS
                check_count(str(info.field_name), v, most, "entries")
        return v

    @field_validator("notify", mode="before")
    @classmethod
    def _notify_count(cls, v: Any, info: ValidationInfo) -> Any:
        if _writing(info):
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
            if _writing(info) and len(key) > MAX_ENV_KEY:
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
        if _writing(info):
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
        if v is not None and v > MAX_DURATION and _writing(info):
            raise ValueError(f"{info.field_name} is {_seconds_text(v)}; at most 365d (one year)")
        return v

    @field_validator("output_limit")
    @classmethod
    def _output_limit(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v > MAX_OUTPUT_LIMIT and _writing(info):
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
        if _writing(info):
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
    """(field path, message) pairs, e.g. ``("timeout", "expected a duration like 30s ...")``.

    Paths join nested locations with dots (``env.FOO``, ``command.0``). The
    command/shell rule is reported on ``command``; a JSON syntax error on "".
    """
    out = []
    for e in err.errors():
        kind = e["type"]
        # a dict key's own error is located at ("env", KEY, "[key]"): say "env.KEY"
        path = ".".join(_part(p) for p in e["loc"] if p != "[key]")
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


def spec_fields() -> list[str]:
    """The names of every JobSpec field, in declaration order."""
    return list(JobSpec.model_fields)

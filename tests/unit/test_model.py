"""JobSpec: every field's good and bad values, strictness, JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from scheduler.model import Concurrency, JobSpec, spec_fields, validation_messages
from scheduler.schedule import Schedule

BASE: dict[str, Any] = {"name": "backup", "schedule": "30 2 * * *", "command": ["/bin/true"]}


DROP = object()


def make(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({**BASE, **fields})


def problems(**fields: Any) -> list[tuple[str, str]]:
    raw = {k: v for k, v in {**BASE, **fields}.items() if v is not DROP}
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(raw)
    return validation_messages(info.value)


def test_defaults() -> None:
    spec = make()
    assert spec.timezone == "UTC"
    assert spec.concurrency is Concurrency.FORBID
    assert (spec.retries, spec.retry_backoff, spec.suspend, spec.description) == (
        0,
        10.0,
        False,
        "",
    )
    assert spec.env == spec.selector == spec.labels == {}
    assert spec.timeout is spec.starting_deadline is spec.keep_for is spec.output_limit is None
    assert spec.shell is spec.workdir is spec.user is None


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("name", "a", "a"),
        ("name", "db-backup-2", "db-backup-2"),
        ("name", "9" * 63, "9" * 63),
        ("schedule", "*/10 * * * * *", "*/10 * * * * *"),
        ("schedule", "@every 1h30m", "@every 1h30m"),
        ("timezone", "Europe/Berlin", "Europe/Berlin"),
        ("timezone", "Australia/Lord_Howe", "Australia/Lord_Howe"),
        ("command", ["backup", "--all", ""], ["backup", "--all", ""]),
        ("env", {"FOO": "1", "_BAR_2": ""}, {"FOO": "1", "_BAR_2": ""}),
        ("workdir", "/srv", "/srv"),
        ("user", "nobody", "nobody"),
        ("timeout", "30s", 30.0),
        ("timeout", "1h30m", 5400.0),
        ("timeout", 12, 12.0),
        ("timeout", 0.5, 0.5),
        ("timeout", None, None),
        ("concurrency", "allow", Concurrency.ALLOW),
        ("concurrency", "replace", Concurrency.REPLACE),
        ("concurrency", Concurrency.FORBID, Concurrency.FORBID),
        ("retries", 0, 0),
        ("retries", 10, 10),
        ("retry_backoff", "1m", 60.0),
        ("retry_backoff", 0, 0.0),
        ("starting_deadline", "10m", 600.0),
        ("selector", {"disk": "ssd"}, {"disk": "ssd"}),
        ("labels", {"team": "ops"}, {"team": "ops"}),
        ("suspend", True, True),
        ("description", "nightly backup", "nightly backup"),
        ("output_limit", "1MiB", 1024 * 1024),
        ("output_limit", "10MB", 10_000_000),
        ("output_limit", 4096, 4096),
        ("keep_succeeded", 0, 0),
        ("keep_failed", 100, 100),
        ("keep_for", "7d", 604800.0),
    ],
)
def test_good_values(field: str, value: Any, stored: Any) -> None:
    assert getattr(make(**{field: value}), field) == stored


def test_shell_instead_of_command() -> None:
    spec = JobSpec(name="x", schedule="@daily", shell="df -h / | tail -1")
    assert spec.shell == "df -h / | tail -1"
    assert spec.command is None


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "Backup"}, "name", "not a valid job name"),
        ({"name": "a/b"}, "name", "no '/', spaces or uppercase"),
        ({"name": "a b"}, "name", "not a valid job name"),
        ({"name": "-a"}, "name", "not a valid job name"),
        ({"name": "a-"}, "name", "not a valid job name"),
        ({"name": ""}, "name", "not a valid job name"),
        ({"name": "a" * 64}, "name", "not a valid job name"),
        ({"name": 5}, "name", "valid string"),
        ({"name": DROP}, "name", "missing required field"),
        ({"schedule": "* * *"}, "schedule", "expected 5 cron fields"),
        ({"schedule": "61 * * * *"}, "schedule", "invalid cron expression"),
        ({"schedule": "@every 10ms"}, "schedule", "at least 1s"),
        ({"schedule": 5}, "schedule", "valid string"),
        ({"schedule": DROP}, "schedule", "missing required field"),
        ({"timezone": "Mars/Base"}, "timezone", "unknown time zone 'Mars/Base'"),
        ({"timezone": "CEST"}, "timezone", "expected an IANA name like Europe/Berlin"),
        ({"command": []}, "command", "non-empty list"),
        ({"command": [""]}, "command", "non-empty list"),
        ({"command": "echo hi"}, "command", "use 'shell' instead"),
        ({"command": ["a", 1]}, "command.1", "valid string"),
        ({"command": DROP}, "command", "missing 'command' or 'shell'"),
        ({"shell": "date"}, "command", "both 'command' and 'shell' are set"),
        ({"command": DROP, "shell": "  "}, "shell", "non-empty shell command"),
        ({"env": {"1FOO": "x"}}, "env", "not a valid environment variable name"),
        ({"env": {"A-B": "x"}}, "env", "'A-B'"),
        ({"env": {"FOO": 1}}, "env.FOO", "valid string"),
        ({"workdir": ""}, "workdir", "must not be empty"),
        ({"user": ""}, "user", "must not be empty"),
        ({"timeout": "soon"}, "timeout", "expected a duration like 30s, 5m, 2h"),
        ({"timeout": "-5s"}, "timeout", "not negative"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": True}, "timeout", "expected a duration"),
        ({"concurrency": "sometimes"}, "concurrency", "'forbid', 'allow' or 'replace'"),
        ({"retries": -1}, "retries", "greater than or equal to 0"),
        ({"retries": 11}, "retries", "less than or equal to 10"),
        ({"retries": "many"}, "retries", "valid integer"),
        ({"retry_backoff": "later"}, "retry_backoff", "expected a duration"),
        ({"retry_backoff": None}, "retry_backoff", "valid number"),
        ({"starting_deadline": "0s"}, "starting_deadline", "greater than 0"),
        ({"selector": ["disk"]}, "selector", "valid dictionary"),
        ({"labels": {"a": None}}, "labels.a", "valid string"),
        ({"suspend": "perhaps"}, "suspend", "valid boolean"),
        ({"description": ["x"]}, "description", "valid string"),
        ({"output_limit": "lots"}, "output_limit", "expected a size like"),
        ({"output_limit": 0}, "output_limit", "greater than 0"),
        ({"keep_succeeded": -1}, "keep_succeeded", "greater than or equal to 0"),
        ({"keep_failed": "all"}, "keep_failed", "valid integer"),
        ({"keep_for": "forever"}, "keep_for", "expected a duration"),
        ({"tiemout": "5s"}, "tiemout", "unknown field (did you mean 'timeout'?)"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_values(fields: dict[str, Any], field: str, message: str) -> None:
    got = problems(**fields)
    assert any(f == field and message in m for f, m in got), got


def test_every_problem_is_reported_at_once() -> None:
    got = dict(problems(name="Bad", schedule="nope", timeout="soon", extra=1))
    assert set(got) == {"name", "schedule", "timeout", "extra"}


def test_frozen() -> None:
    spec = make()
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"


def test_helpers_return_parsed_objects() -> None:
    spec = make(timezone="Europe/Berlin", schedule="@every 10s")
    assert spec.schedule_obj() is Schedule.parse("@every 10s")
    assert spec.zone().key == "Europe/Berlin"
    assert spec.zone() is make(timezone="Europe/Berlin").zone()
    assert "schedule" in spec_fields() and spec_fields()[0] == "name"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"timeout": "1m30s", "output_limit": "1MiB", "env": {"B": "2", "A": "1"}},
        {"command": None, "shell": "echo hi | wc -c", "timezone": "Australia/Lord_Howe"},
        {"concurrency": "replace", "retries": 3, "retry_backoff": "500ms", "suspend": True,
         "selector": {"disk": "ssd"}, "labels": {"x": "y"}, "keep_for": "2d",
         "keep_succeeded": 0, "keep_failed": 5, "starting_deadline": 1.5, "user": "nobody",
         "workdir": "/tmp", "description": "ünïcode ✓"},
    ],
)  # fmt: skip
def test_json_round_trip(fields: dict[str, Any]) -> None:
    spec = make(**fields)
    data = spec.to_json()
    assert JobSpec.from_json(data) == spec
    assert JobSpec.from_json(data).to_json() == data  # deterministic
    assert not data.startswith(b"{ ") and b'": ' not in data  # compact


def test_to_json_is_compact_ordered_and_uses_seconds() -> None:
    data = make(timeout="1m30s", output_limit="1KiB").to_json()
    assert data == (
        b'{"name":"backup","schedule":"30 2 * * *","command":["/bin/true"],'
        b'"timeout":90.0,"output_limit":1024}'
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "should be an object"),
        (b'{"name": "x"}', "schedule: missing required field"),
        (b'{"name": "x", "schedule": "@daily", "shell": "true", "bogus": 1}', "bogus: unknown"),
    ],
)
def test_from_json_errors_are_value_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match="invalid job spec") as info:
        JobSpec.from_json(data)
    assert message in str(info.value)
    assert not isinstance(info.value, ValidationError)

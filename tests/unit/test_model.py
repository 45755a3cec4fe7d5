"""JobSpec: every field's good and bad values, strictness, JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

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
        ({"name": 5}, "name", "must be a string"),
        ({"name": DROP}, "name", "missing required field"),
        ({"schedule": "* * *"}, "schedule", "expected 5 cron fields"),
        ({"schedule": "61 * * * *"}, "schedule", "invalid cron expression"),
        ({"schedule": "@every 10ms"}, "schedule", "at least 1s"),
        ({"schedule": 5}, "schedule", "must be a string"),
        ({"schedule": DROP}, "schedule", "missing required field"),
        ({"timezone": "Mars/Base"}, "timezone", "unknown time zone 'Mars/Base'"),
        ({"timezone": "CEST"}, "timezone", "expected an IANA name like Europe/Berlin"),
        ({"command": []}, "command", "non-empty list"),
        ({"command": [""]}, "command", "non-empty list"),
        ({"command": "echo hi"}, "command", "use 'shell' instead"),
        ({"command": ["a", 1]}, "command.1", "must be a string"),
        ({"command": DROP}, "command", "missing 'command' or 'shell'"),
        ({"shell": "date"}, "command", "both 'command' and 'shell' are set"),
        ({"command": DROP, "shell": "  "}, "shell", "non-empty shell command"),
        ({"env": {"1FOO": "x"}}, "env", "not a valid environment variable name"),
        ({"env": {"A-B": "x"}}, "env", "'A-B'"),
        ({"env": {"FOO": 1}}, "env.FOO", "must be a string"),
        ({"workdir": ""}, "workdir", "must not be empty"),
        ({"user": ""}, "user", "must not be empty"),
        ({"timeout": "soon"}, "timeout", "expected a duration like 30s, 5m, 2h"),
        ({"timeout": "-5s"}, "timeout", "not negative"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": True}, "timeout", "expected a duration"),
        ({"concurrency": "sometimes"}, "concurrency", "'forbid', 'allow' or 'replace'"),
        ({"retries": -1}, "retries", "must be at least 0"),
        ({"retries": 11}, "retries", "must be at most 10"),
        ({"retries": "many"}, "retries", "must be a whole number"),
        ({"retry_backoff": "later"}, "retry_backoff", "expected a duration"),
        ({"retry_backoff": None}, "retry_backoff", "must be a number"),
        ({"starting_deadline": "0s"}, "starting_deadline", "greater than 0"),
        ({"selector": ["disk"]}, "selector", "must be a mapping"),
        ({"labels": {"a": None}}, "labels.a", "must be a string"),
        ({"suspend": "perhaps"}, "suspend", "must be true or false"),
        ({"description": ["x"]}, "description", "must be a string"),
        ({"output_limit": "lots"}, "output_limit", "expected a size like"),
        ({"output_limit": 0}, "output_limit", "greater than 0"),
        ({"keep_succeeded": -1}, "keep_succeeded", "must be at least 0"),
        ({"keep_failed": "all"}, "keep_failed", "must be a whole number"),
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


# limits (scheduler/limits.py): applied when a spec is written ---------------------

KIB, MIB = 1024, 1024 * 1024


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"description": "d" * 5000}, "description", "description is 5000 characters; at most 4096"),
        ({"schedule": "@every " + "1" * 300 + "s"}, "schedule", "schedule is 308 characters; at most 256"),
        ({"timezone": "Europe/" + "x" * 100}, "timezone", "timezone is 107 characters; at most 64"),
        ({"command": None, "shell": "x" * (32 * KIB + 1)}, "shell", "shell is 32769 characters; at most 32768"),
        ({"command": ["a"] * 1025}, "command", "command has 1025 arguments; at most 1024"),
        ({"command": ["a", "b" * (32 * KIB + 1)]}, "command.1", "command argument is 32769 characters; at most 32768"),
        ({"env": {f"K{i}": "" for i in range(257)}}, "env", "env has 257 entries; at most 256"),
        ({"env": {"A": "v" * (32 * KIB + 1)}}, "env.A", "env value is 32769 characters; at most 32768"),
        ({"env": {"A" * 257: "v"}}, "env", "is 257 characters; at most 256"),
        ({"workdir": "/" + "w" * 4096}, "workdir", "workdir is 4097 characters; at most 4096"),
        ({"user": "u" * 257}, "user", "user is 257 characters; at most 256"),
        ({"labels": {f"k{i}": "" for i in range(65)}}, "labels", "labels has 65 entries; at most 64"),
        ({"selector": {"k" * 257: "v"}}, "selector", "is 257 characters; at most 256"),
        ({"selector": {"k": "v" * 1025}}, "selector.k", "selector value is 1025 characters; at most 1024"),
        ({"output_limit": "100GiB"}, "output_limit", "output_limit is 100 GiB; at most 16 MiB"),
        ({"output_limit": 16 * MIB + 1}, "output_limit", "output_limit is 16777217 bytes; at most 16 MiB"),
        ({"output_limit": "9" * 400 + "MiB"}, "output_limit", "is too large"),
        ({"timeout": "366d"}, "timeout", "timeout is 366d; at most 365d (one year)"),
        ({"retry_backoff": "53w"}, "retry_backoff", "retry_backoff is 371d; at most 365d"),
        ({"starting_deadline": 1e300}, "starting_deadline", "starting_deadline is 1e+300s; at most 365d"),
        ({"keep_for": "8761h"}, "keep_for", "keep_for is 365d1h; at most 365d"),
        ({"schedule": "@every 400d"}, "schedule", "@every interval is 400d; at most 365d"),
        ({"timeout": "9" * 400 + "s"}, "timeout", "is too large"),
        ({"retry_backoff": "9" * 400 + "s"}, "retry_backoff", "is too large"),
        ({"timeout": "1e400s"}, "timeout", "expected a duration"),
        ({"timeout": float("inf")}, "timeout", "not negative or infinite"),
        ({"timeout": float("nan")}, "timeout", "not negative or infinite"),
        ({"name": "backup\n"}, "name", "not a valid job name"),
        ({"env": {"FOO\n": "x"}}, "env", "not a valid environment variable name"),
    ],
)  # fmt: skip
def test_limits(fields: dict[str, Any], field: str, message: str) -> None:
    got = problems(**fields)
    assert any(f == field and message in m for f, m in got), got


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"command": ["/bin/echo", "a\0b"]}, "command.1"),
        ({"command": ["\0"]}, "command.0"),
        ({"command": None, "shell": "echo \0"}, "shell"),
        ({"env": {"A": "x\0"}}, "env.A"),
        ({"workdir": "/srv\0/x"}, "workdir"),
        ({"user": "nobody\0"}, "user"),
        ({"description": "\0"}, "description"),
        ({"schedule": "@daily\0"}, "schedule"),
        ({"timezone": "UTC\0"}, "timezone"),
        ({"selector": {"disk\0": "ssd"}}, "selector"),
        ({"selector": {"disk": "ssd\0"}}, "selector.disk"),
        ({"labels": {"\0": "x"}}, "labels"),
        ({"labels": {"team": "\0ops"}}, "labels.team"),
    ],
)
def test_nul_bytes_are_refused_in_every_string(fields: dict[str, Any], field: str) -> None:
    got = problems(**fields)
    assert any(f == field and "contains a NUL byte" in m for f, m in got), got


@pytest.mark.parametrize(
    "fields",
    [{"name": "\0"}, {"name": "a\0b"}, {"env": {"A\0": "1"}}],
)
def test_nul_bytes_in_names_fail_the_name_rules(fields: dict[str, Any]) -> None:
    got = problems(**fields)
    assert any("not a valid" in m for _, m in got), got


def test_limits_are_inclusive() -> None:
    spec = make(
        description="d" * 4096,
        output_limit="16MiB",
        timeout="365d",
        schedule="@every 365d",
        command=["a"] * 1024,
        env={f"K{i}": "" for i in range(256)},
        labels={f"k{i}": "v" for i in range(64)},
        user="u" * 256,
    )
    assert spec.output_limit == 16 * MIB and spec.timeout == 365 * 86400.0


def test_spec_size_is_bounded_as_stored_json() -> None:
    big = {f"K{i}": "v" * 30_000 for i in range(3)}  # each value within its own limit
    got = problems(env=big)
    (message,) = [m for f, m in got if f == ""]
    size = len(
        JobSpec.model_validate({**BASE, "env": big}, context={"max_spec_bytes": 10**6}).to_json()
    )
    assert message == f"the job spec is {size} bytes as JSON; at most 65536"
    assert size > 64 * KIB


def test_spec_size_limit_comes_from_the_context() -> None:
    small = {**BASE, "description": "x" * 200}
    assert JobSpec.model_validate(small).description == "x" * 200
    with pytest.raises(ValidationError, match=r"bytes as JSON; at most 128"):
        JobSpec.model_validate(small, context={"max_spec_bytes": 128})


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "N" * 1_000_000},
        {"schedule": "x" * 1_000_000},
        {"env": {"B" * 1_000_000: "1"}},
        {"env": {"1" * 100: "1"}},
        {"labels": {"k" * 1_000_000: "v"}},
        {"timeout": "5" * 1_000_000 + "x"},
        {"output_limit": "5" * 1_000_000 + "x"},
        {"command": ["x" * 1_000_000]},
        pytest.param({"retries": 10**5000}, id="retries-5000-digits"),  # repr() would refuse
        pytest.param({"output_limit": 10**5000}, id="output_limit-5000-digits"),
    ],
)
def test_messages_never_echo_huge_input(fields: dict[str, Any]) -> None:
    got = problems(**fields)
    assert got
    for field, message in got:
        assert len(field) < 100 and len(message) < 300, (field[:100], message[:400])


def test_stored_specs_are_read_without_the_write_limits() -> None:
    """Limits apply on write; a job stored before they existed stays readable."""
    old = json.dumps(
        {**BASE, "description": "d" * 10_000, "output_limit": 100 * 1024**3,
         "timeout": 2 * 365 * 86400.0, "env": {"A": "x\0y"}, "schedule": "@every 800d",
         "labels": {f"k{i}": "v" * 2000 for i in range(100)}}
    )  # fmt: skip
    assert len(old) > 64 * KIB
    spec = JobSpec.from_json(old)
    assert spec.output_limit == 100 * 1024**3 and spec.env == {"A": "x\0y"}
    assert JobSpec.from_json(spec.to_json()) == spec  # suspend/resume write it back as it is
    with pytest.raises(ValidationError):
        JobSpec.model_validate(json.loads(old))
    with pytest.raises(ValidationError, match="bytes as JSON"):
        JobSpec.model_validate_json(json.dumps({**BASE, "description": "d" * 4000} | {
            "env": {f"K{i}": "v" * 30_000 for i in range(3)}}))  # fmt: skip

    class Listing(BaseModel):  # as the API's response models hold specs
        jobs: list[JobSpec]

    assert Listing(jobs=[spec]).jobs == [spec]  # a built spec is not checked again
    assert Listing.model_validate({"jobs": [spec]}).jobs == [spec]


def test_stored_specs_still_follow_the_model() -> None:
    with pytest.raises(ValueError, match="retry_backoff"):
        JobSpec.from_json(json.dumps({**BASE, "retry_backoff": None}))


def test_messages_are_plain_words_not_the_librarys() -> None:
    """No "Input should be ..." or "[key]" from pydantic reaches a user."""
    cases = [
        {"retries": "many"}, {"env": {1: "v"}}, {"selector": ["disk"]}, {"suspend": "maybe"},
        {"concurrency": "sometimes"}, {"retries": 11}, {"command": ["a", 1]},
    ]  # fmt: skip
    for bad in cases:
        with pytest.raises(ValidationError) as info:
            JobSpec.model_validate({"name": "a", "schedule": "@daily", "shell": "true", **bad})
        for path, message in validation_messages(info.value):
            assert "Input should" not in message and "Value error" not in message, message
            assert "[key]" not in path, path

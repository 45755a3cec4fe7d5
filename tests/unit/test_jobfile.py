"""Job files: every problem named with file, line, job and field; all or nothing."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from scheduler.jobfile import MAX_FILE_BYTES, JobFileError, Problem, load_jobs, load_jobs_text
from scheduler.yamlbound import FACTOR, ExpansionBudget

_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
jobs:
  - name: backup
    schedule: "30 2 * * *"
    command: ["/bin/true"]
"""


def write(tmp_path: Path, text: str | bytes, name: str = "jobs.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, str):
        p.write_text(text, encoding="utf-8")
    else:
        p.write_bytes(text)
    return p


def problems_of(path: Path | str) -> list[Problem]:
    with pytest.raises(JobFileError) as info:
        load_jobs(path)
    assert info.value.problems
    return info.value.problems


def job(body: str, name: str = "backup") -> str:
    """A file with one job: ``body`` lines follow the name (line 3 onwards)."""
    return f"jobs:\n  - name: {name}\n" + "".join(f"    {line}\n" for line in body.splitlines())


# (file text, line, job, field, message fragment)
CASES = [
    # malformed YAML
    (GOOD + "    env: {A: 1\n", 6, None, None, "invalid YAML"),
    ("jobs:\n  - name: x\n\tschedule: x\n", 3, None, None, "invalid YAML"),
    (job('schedule: @daily\nshell: "true"'), 3, None, None, 'quote the schedule, e.g. schedule: "'),
    (job('schedule: */5 * * * *\nshell: "true"'), 3, None, None, "quote the schedule"),
    # document shape
    ("- a\n- b\n", 1, None, None, "expected a mapping with a 'jobs:' list (got a list)"),
    ("just text\n", 1, None, None, "expected a mapping"),
    ("other: 1\n", 1, None, None, "unknown top-level key 'other'"),
    ("other: 1\n", 1, None, None, "missing top-level 'jobs:' list"),
    ("jobs: 5\n", 1, None, None, "'jobs' must be a list of job mappings (got '5')"),
    ("jobs:\n", 1, None, None, "'jobs' must be a list of job mappings (got nothing)"),
    ("jobs:\n  - just a string\n", 2, "#1", None, "a job must be a mapping"),
    (GOOD + "version: 2\n", 5, None, None, "unknown top-level key 'version'"),
    # fields
    (job('schedule: "@daily"\nshell: "true"\ntiemout: 5s'), 5, "backup", "tiemout",
     "unknown field (did you mean 'timeout'?)"),
    (job('schedule: "61 * * * *"\nshell: "true"'), 3, "backup", "schedule",
     "invalid cron expression"),
    (job('schedule: "* * *"\nshell: "true"'), 3, "backup", "schedule", "expected 5 cron fields"),
    (job('schedule: "@daily"\nshell: "true"\ntimezone: Mars/Base'), 5, "backup", "timezone",
     "unknown time zone 'Mars/Base'"),
    (job('schedule: "@daily"\nshell: "true"\ntimeout: soon'), 5, "backup", "timeout",
     "expected a duration like 30s, 5m, 2h"),
    (job('schedule: "@daily"\nshell: "true"\nretry_backoff: 5 minutes'), 5, "backup",
     "retry_backoff", "expected a duration"),
    (job('schedule: "@daily"\nshell: "true"\ncommand: [a]'), 5, "backup", "command",
     "both 'command' and 'shell' are set"),
    (job('schedule: "@daily"\ndescription: nothing to run'), 2, "backup", "command",
     "missing 'command' or 'shell'"),
    (job('shell: "true"'), 2, "backup", "schedule", "missing required field"),
    (job('schedule: "@daily"\nshell: "true"', name="db/backup"), 2, "db/backup", "name",
     "no '/', spaces or uppercase"),
    (job('schedule: "@daily"\nshell: "true"', name="Backup"), 2, "Backup", "name",
     "not a valid job name"),
    (job('schedule: "@daily"\nshell: "true"', name='"my job"'), 2, "my job", "name",
     "not a valid job name"),
    (job('schedule: "@daily"\nshell: "true"\nenv:\n  GOOD: "1"\n  BAD: 2'), 7, "backup",
     "env.BAD", "must be a string"),
    (job('schedule: "@daily"\ncommand:\n  - /bin/echo\n  - 3'), 6, "backup", "command.1",
     "must be a string"),
    (job('schedule: "@daily"\nshell: "true"\nretries: 99'), 5, "backup", "retries",
     "must be at most 10"),
    # duplicate keys, which YAML itself would silently resolve
    (job('schedule: "@daily"\nshell: "true"\ntimeout: 5s\ntimeout: 10s'), 6, "backup",
     "timeout", "duplicate key (first at line 5)"),
    (job('schedule: "@daily"\nshell: "true"\nenv:\n  A: "1"\n  A: "2"'), 7, "backup", "env.A",
     "duplicate key (first at line 6)"),
    (GOOD + "jobs: []\n", 5, None, None, "duplicate key 'jobs' (first at line 1)"),
    # duplicate job names in one file
    (GOOD + '  - name: backup\n    schedule: "@daily"\n    shell: "true"\n', 5, "backup", "name",
     "duplicate job name 'backup' (also defined at {file}:2)"),
    # unsafe tags are not constructed
    (job('schedule: "@daily"\ncommand: !!python/object/apply:os.system ["echo pwned"]'), 4,
     "backup", "command", "could not determine a constructor"),
    (job('schedule: "@daily"\nshell: !custom "true"'), 4, "backup", "shell",
     "could not determine a constructor"),
    # empty inputs
    ("", None, None, None, "no jobs found"),
    ("# only a comment\n", None, None, None, "no jobs found"),
    ("---\n---\n", None, None, None, "no jobs found"),
    ("jobs: []\n", None, None, None, "no jobs found"),
    # encoding
    (b"jobs:\n  - name: caf\xe9\n", 2, None, None, "not valid UTF-8 (byte 0xe9)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "job_name", "field", "message"), CASES)
def test_problem_is_reported_with_location(
    tmp_path: Path,
    text: str | bytes,
    line: int | None,
    job_name: str | None,
    field: str | None,
    message: str,
) -> None:
    path = write(tmp_path, text)
    got = problems_of(path)
    message = message.replace("{file}", str(path))
    matching = [p for p in got if message in p.message]
    assert matching, got
    p = matching[0]
    assert (p.file, p.line, p.job, p.field) == (str(path), line, job_name, field), got


def test_str_is_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, job('schedule: "@daily"\nshell: "true"\ntimeout: soon\nfoo: 1'))
    with pytest.raises(JobFileError) as info:
        load_jobs(path)
    assert str(info.value).splitlines() == [
        f"{path}:5: job 'backup': field 'timeout': "
        "expected a duration like 30s, 5m, 2h, 1h30m or 500ms (got 'soon')",
        f"{path}:6: job 'backup': field 'foo': unknown field",
    ]


def test_all_problems_across_files_are_collected(tmp_path: Path) -> None:
    write(tmp_path, job('schedule: "nope"\nshell: "true"'), "a.yaml")
    write(tmp_path, job('schedule: "@daily"\nshell: "true"', name="other"), "b.yml")
    write(tmp_path, job('schedule: "@daily"\nshell: "true"\ntimeout: x', name="third"), "c.yaml")
    got = problems_of(tmp_path)
    assert [(Path(p.file).name, p.job, p.field) for p in got] == [
        ("a.yaml", "backup", "schedule"),
        ("c.yaml", "third", "timeout"),
    ]


def test_duplicate_names_across_files_name_both_locations(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, "# again\n" + GOOD, "b.yaml")
    (p,) = problems_of(tmp_path)
    assert (p.file, p.line, p.job, p.field) == (str(second), 3, "backup", "name")
    assert f"also defined at {first}:2" in p.message


def test_multi_document_file(tmp_path: Path) -> None:
    text = GOOD + "---\n" + job('schedule: "@every 5s"\nshell: date', name="two") + "---\n"
    specs = load_jobs(write(tmp_path, text))
    assert [s.name for s in specs] == ["backup", "two"]
    assert specs[1].shell == "date"


def test_multi_document_problem_lines_are_file_lines(tmp_path: Path) -> None:
    text = GOOD + "---\n" + job('schedule: "@daily"\nshell: "true"\ntimeout: x', name="two")
    (p,) = problems_of(write(tmp_path, text))
    assert (p.line, p.job, p.field) == (10, "two", "timeout")


def test_directory_sorted_non_recursive_yaml_and_yml_only(tmp_path: Path) -> None:
    write(tmp_path, job('schedule: "@daily"\nshell: "true"', name="b"), "b.yml")
    write(tmp_path, job('schedule: "@daily"\nshell: "true"', name="a"), "a.yaml")
    write(tmp_path, "not: [yaml", "notes.txt")
    write(tmp_path, "garbage: [", "c.yaml.bak")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", job('schedule: "@daily"\nshell: "true"', name="deep"))
    assert [s.name for s in load_jobs(tmp_path)] == ["a", "b"]
    assert [s.name for s in load_jobs(str(tmp_path))] == ["a", "b"]


def test_nothing_is_returned_when_any_file_is_bad(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, "jobs: [", "b.yaml")
    (p,) = problems_of(tmp_path)
    assert p.file.endswith("b.yaml") and "invalid YAML" in p.message


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such file or directory"),
        ("empty-dir", "no *.yaml or *.yml files in this directory"),
    ],
)
def test_bad_paths(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "nothing-here" if setup == "missing" else tmp_path
    (p,) = problems_of(path)
    assert (p.file, p.line, p.job, p.field, p.message) == (str(path), None, None, None, message)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:  # 10 MB that would be slow to parse
        f.write(b"jobs:\n" + b"  - {name: x, schedule: '@daily', shell: 'true'}\n" * 220_000)
    size = path.stat().st_size
    assert size > 10 * 1024 * 1024 - 1
    start = time.perf_counter()
    (p,) = problems_of(path)
    assert time.perf_counter() - start < 0.5
    assert p.message == f"file is {size} bytes, larger than the 1 MiB limit"


def test_limit_is_exactly_one_mib(tmp_path: Path) -> None:
    padding = MAX_FILE_BYTES - len(GOOD)
    assert load_jobs(write(tmp_path, GOOD + "#" * (padding - 1) + "\n"))[0].name == "backup"
    (p,) = problems_of(write(tmp_path, GOOD + "#" * padding + "\n"))
    assert "larger than the 1 MiB limit" in p.message


def test_alias_bomb_does_not_hang(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = job('schedule: "@daily"\nshell: "true"\nlabels:\n' + "\n".join(f"  {x}" for x in lines))
    start = time.perf_counter()
    (p,) = problems_of(write(tmp_path, text))
    assert time.perf_counter() - start < 2
    assert (p.line, p.job, p.field) == (5, "backup", "labels")
    assert p.message.startswith("YAML aliases expand to more than 8 MiB")


def test_one_big_string_used_2000_times_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """208 KB that reuse one 200 KB string 2,000 times: before, 400 MB of specs were built."""
    lines = ["jobs:", "  - name: bomb", '    schedule: "@daily"']
    lines += [f"    description: &big {'x' * 200_000}", "    command:"]
    lines += ["      - *big"] * 2000
    lines += ["  - name: after", '    schedule: "@daily"', "    command: [*big]"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert 200_000 < path.stat().st_size < 250_000
    (p,) = problems_of(path)  # the second job is not built once the budget is spent
    assert (p.file, p.line, p.job, p.field) == (str(path), 5, "bomb", "command")
    assert p.message == (
        "YAML aliases expand to more than 8 MiB "
        "(the bound is 10 times the file's size, at least 8 MiB); use fewer aliases"
    )


def test_merge_keys_count_each_time_they_are_used(tmp_path: Path) -> None:
    """Merging one mapping 10 times, 6 levels deep, would flatten to 10**7 keys: charged first."""
    lines = ["defs:", "  - &m0 {" + ", ".join(f"k{i}: {'v' * 50}" for i in range(10)) + "}"]
    lines += [f"  - &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}" for i in range(1, 7)]
    lines += ["jobs:", "  - <<: *m6", "    name: bomb", '    schedule: "@daily"']
    got = problems_of(write(tmp_path, "\n".join(lines) + "\n"))
    assert [(p.line, p.job, p.field) for p in got] == [(1, None, None), (10, "bomb", "<<")]
    assert got[0].message == "unknown top-level key 'defs' (expected only 'jobs')"
    assert got[1].message.startswith("YAML aliases expand to more than 8 MiB")


def test_recursive_alias_is_a_problem(tmp_path: Path) -> None:
    (p,) = problems_of(write(tmp_path, job('schedule: "@daily"\nshell: "true"\nlabels: &a [*a]')))
    assert (p.line, p.job, p.field) == (5, "backup", "labels")
    assert p.message == "a YAML alias is used inside its own anchor (a recursive structure)"


@pytest.mark.parametrize("depth", [33, 300, 900])
def test_deep_nesting_is_a_problem_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    """Before: 300 levels of [[[...]]] raised RecursionError out of `etcron validate`."""
    text = job(f'schedule: "@daily"\nshell: "true"\nlabels: {"[" * depth}{"]" * depth}')
    (p,) = problems_of(write(tmp_path, text))
    assert (p.line, p.job, p.field) == (5, "backup", "labels")
    assert p.message == "YAML nesting is more than 32 levels deep"


@pytest.mark.parametrize(
    "text",
    ["[" + "a," * 50_000 + "]", "-\n" * 50_000, "{" + "a: b, " * 25_000 + "}",
     "- &a x\n" + "- *a\n" * 10_000],
)  # fmt: skip
def test_files_without_alias_blowup_stay_within_their_budget(text: str) -> None:
    budget = ExpansionBudget(len(text))
    budget.total = budget.left = FACTOR * len(text)  # without the 8 MiB floor
    assert budget.charge(yaml.compose(text, Loader=_COMPOSER)) is None


def test_values_yaml_cannot_build_are_problems(tmp_path: Path) -> None:
    text = job(f'schedule: "@daily"\nshell: "true"\ndescription: 2001-13-45\nretries: {"9" * 5000}')
    got = problems_of(write(tmp_path, text))
    assert [(p.line, p.field) for p in got] == [(5, "description"), (6, "retries")]
    assert got[0].message == "cannot read this value: month must be in 1..12"
    assert got[1].message.startswith("cannot read this value: Exceeds the limit")
    assert all(len(p.message) < 200 for p in got)


@pytest.mark.parametrize(
    ("body", "line", "field", "message"),
    [
        ('output_limit: 100GiB', 5, "output_limit", "output_limit is 100 GiB; at most 16 MiB"),
        (f'output_limit: {"9" * 400}MiB', 5, "output_limit", "is too large"),
        (f'retry_backoff: {"9" * 400}s', 5, "retry_backoff", "is too large"),
        ('timeout: .inf', 5, "timeout", "not negative or infinite"),
        ('timeout: 400d', 5, "timeout", "timeout is 400d; at most 365d (one year)"),
        ('description: "nul\\0"', 5, "description", "description contains a NUL byte"),
        ('env:\n  A: "1"\n  B: "\\0"', 7, "env.B", "env value contains a NUL byte"),
        ('workdir: "/srv\\0"', 5, "workdir", "workdir contains a NUL byte"),
        (f'description: {"d" * 5000}', 5, "description", "description is 5000 characters; at most 4096"),
    ],
)  # fmt: skip
def test_limits_are_reported_with_location(
    tmp_path: Path, body: str, line: int, field: str, message: str
) -> None:
    path = write(tmp_path, job('schedule: "@daily"\nshell: "true"\n' + body))
    (p,) = problems_of(path)
    assert (p.file, p.line, p.job, p.field) == (str(path), line, "backup", field)
    assert message in p.message


def test_nul_byte_in_an_argument_names_the_argument(tmp_path: Path) -> None:
    (p,) = problems_of(
        write(tmp_path, job('schedule: "@daily"\ncommand:\n  - /bin/echo\n  - "a\\0b"'))
    )
    assert (p.line, p.job, p.field) == (6, "backup", "command.1")
    assert p.message == "command argument contains a NUL byte (at character 2); none is allowed"


def test_anchors_and_merge_keys_are_supported(tmp_path: Path) -> None:
    text = """\
jobs:
  - &base
    name: one
    schedule: "@daily"
    shell: "true"
    env: &env {A: "1"}
  - <<: *base
    name: two
    env: *env
"""
    specs = load_jobs(write(tmp_path, text))
    assert [(s.name, s.shell, s.env) for s in specs] == [
        ("one", "true", {"A": "1"}),
        ("two", "true", {"A": "1"}),
    ]


def test_yaml_scalars_become_job_values(tmp_path: Path) -> None:
    text = job(
        'schedule: "*/10 * * * * *"\ncommand: [sleep, "3"]\ntimeout: 30\nsuspend: yes\n'
        "output_limit: 1MiB\nconcurrency: replace\nkeep_for: 7d"
    )
    (spec,) = load_jobs(write(tmp_path, text))
    assert (spec.timeout, spec.suspend, spec.output_limit, spec.keep_for) == (
        30.0,
        True,
        1024 * 1024,
        604800.0,
    )
    assert spec.command == ["sleep", "3"]


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(GOOD.encode())))
    assert [s.name for s in load_jobs("-")] == ["backup"]
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"jobs: 1\n")))
    (p,) = problems_of("-")
    assert (p.file, p.line) == ("<stdin>", 1)


def test_load_jobs_text() -> None:
    assert load_jobs_text(GOOD)[0].name == "backup"
    with pytest.raises(JobFileError, match=r"^api\.yaml: no jobs found"):
        load_jobs_text("", "api.yaml")


def test_example_file_loads() -> None:
    specs = load_jobs(ROOT / "examples" / "jobs.yaml")
    names = [s.name for s in specs]
    assert names == ["hello", "disk-report", "slow", "nightly-cleanup"]
    by_name = {s.name: s for s in specs}
    assert by_name["slow"].concurrency == "forbid"
    assert by_name["nightly-cleanup"].zone().key == "Europe/Berlin"
    for s in specs:
        argv0 = s.command[0] if s.command else "sh"
        assert argv0 in {"sh", "sleep", "find"}


@pytest.mark.parametrize("bad_first", [True, False])
def test_duplicate_name_is_reported_when_one_copy_is_also_invalid(
    tmp_path: Path, bad_first: bool
) -> None:
    """Every problem is reported: the invalid copy's field and the duplicate name."""
    bad = job('schedule: "61 * * * *"\nshell: "true"')
    text = (
        (bad + GOOD.removeprefix("jobs:\n")) if bad_first else (GOOD + bad.removeprefix("jobs:\n"))
    )
    found = {(p.job, p.field) for p in problems_of(write(tmp_path, text))}
    assert found == {("backup", "schedule"), ("backup", "name")}

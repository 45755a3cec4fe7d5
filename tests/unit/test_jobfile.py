"""Job files: every problem named with file, line, job and field; all or nothing."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from scheduler.jobfile import MAX_FILE_BYTES, JobFileError, Problem, load_jobs, load_jobs_text

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
     "env.BAD", "valid string"),
    (job('schedule: "@daily"\ncommand:\n  - /bin/echo\n  - 3'), 6, "backup", "command.1",
     "valid string"),
    (job('schedule: "@daily"\nshell: "true"\nretries: 99'), 5, "backup", "retries",
     "less than or equal to 10"),
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
    got = problems_of(write(tmp_path, text))
    assert time.perf_counter() - start < 2
    assert {p.field for p in got} >= {"labels.a0", "labels.a8"}


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

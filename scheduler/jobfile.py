"""Load job definitions from YAML files, reporting every problem with its line.

Format: a file holds one or more YAML documents (separated by ``---``); each is
a mapping whose only key is ``jobs:``, a list of job mappings (the fields of
:class:`scheduler.model.JobSpec`). A directory means its ``*.yaml`` and
``*.yml`` files, sorted by name, not recursive. ``-`` means standard input.

Rules:

- All or nothing: every file is read and checked, and :class:`JobFileError`
  lists *all* problems (file, line, job, field, message); no job is returned
  when anything is wrong.
- Only safe YAML (no ``!!python`` or custom tags). Duplicate keys in a mapping,
  which YAML parsers silently resolve to the last one, are errors.
- Job names are unique across everything loaded.
- A file over 1 MiB is refused before it is parsed; a file or input without
  any job is an error ("no jobs found"); content must be UTF-8.
- Memory and time stay proportional to the file: before a job is built, what
  its aliases expand to is charged to the file's budget
  (:mod:`scheduler.yamlbound`: 10 times the file's size, at least 8 MiB;
  nesting at most 32 levels). Once it is spent, the problem is reported at the
  field where it ran out and no further job of that file is built.
- A value YAML cannot build (a timestamp like ``2001-13-45``, an integer of
  thousands of digits) is a problem on its field, never a traceback.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scheduler.limits import QUOTE_CHARS, quote
from scheduler.model import JobSpec, validation_messages
from scheduler.yamlbound import ExpansionBudget

# libyaml's parser when installed (about 4x faster here); nodes and marks are the same
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["MAX_FILE_BYTES", "JobFileError", "Problem", "load_jobs", "load_jobs_text"]

MAX_FILE_BYTES = 1024 * 1024
_SCHEDULE_LINE = re.compile(r"^\s*(-\s+)?schedule\s*:")


@dataclass(frozen=True)
class Problem:
    """One problem; ``line`` is 1-based, None when it concerns a whole file."""

    file: str
    line: int | None
    job: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}" if self.line is not None else self.file]
        if self.job is not None:
            parts.append(f"job {self.job!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)


class JobFileError(Exception):
    """Job files that cannot be applied; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def load_jobs(path: str | Path) -> list[JobSpec]:
    """Every job in a file, a directory of ``*.yaml``/``*.yml`` files, or ``-`` (stdin)."""
    loader = _Loader()
    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        loader.load_bytes(data, "<stdin>")
        return loader.result()
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        if not files:
            loader.add(str(p), None, "no *.yaml or *.yml files in this directory")
        for f in files:
            loader.load_file(f)
    elif p.exists():
        loader.load_file(p)
    else:
        loader.add(str(p), None, "no such file or directory")
    return loader.result()


def load_jobs_text(text: str | bytes, file: str = "<string>") -> list[JobSpec]:
    """Jobs from YAML text (as :func:`load_jobs` would read it from ``file``)."""
    loader = _Loader()
    loader.load_bytes(text.encode() if isinstance(text, str) else text, file)
    return loader.result()


class _Loader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.specs: list[JobSpec] = []
        self.names: dict[str, tuple[str, int]] = {}  # name -> where first defined
        self.budget = ExpansionBudget(0)  # replaced per file by load_bytes
        self.spent = False  # the file's alias budget ran out: build no more of its jobs

    def add(
        self,
        file: str,
        line: int | None,
        message: str,
        job: str | None = None,
        field: str | None = None,
    ) -> None:
        # huge input is never echoed whole (keys, names, tags)
        message = message if len(message) <= 500 else message[:500] + "..."
        self.problems.append(Problem(file, line, _cut(job), _cut(field), message))

    def result(self) -> list[JobSpec]:
        if self.problems:
            raise JobFileError(self.problems)
        return self.specs

    def load_file(self, path: Path) -> None:
        name = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                self.add(name, None, f"file is {size} bytes, larger than the 1 MiB limit")
                return
            if not path.is_file():
                self.add(name, None, "not a regular file")
                return
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.add(name, None, f"cannot read: {exc.strerror or exc}")
            return
        self.load_bytes(data, name)

    def load_bytes(self, data: bytes, file: str) -> None:
        if len(data) > MAX_FILE_BYTES:
            self.add(file, None, f"input is more than {MAX_FILE_BYTES} bytes, the 1 MiB limit")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = data[: exc.start].count(b"\n") + 1
            self.add(file, bad_line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})")
            return
        before = len(self.problems)
        jobs = 0
        self.budget, self.spent = ExpansionBudget(len(data)), False
        try:
            for doc in yaml.compose_all(text, Loader=_COMPOSER):
                jobs += self._document(doc, file)
        except yaml.MarkedYAMLError as exc:
            line = _mark_line(exc, None)
            msg = f"invalid YAML: {exc.problem or exc.context}"
            lines = text.splitlines()
            src = lines[line - 1] if line and line <= len(lines) else ""
            if _SCHEDULE_LINE.match(src):
                msg += ' (quote the schedule, e.g. schedule: "*/5 * * * *" or "@daily")'
            self.add(file, line, msg)
        except yaml.YAMLError as exc:
            self.add(file, None, f"invalid YAML: {exc}")
        except RecursionError:  # only without libyaml, whose parser stops at 1000 levels
            self.add(file, None, "invalid YAML: nested too deeply")
        if jobs == 0 and len(self.problems) == before:
            self.add(file, None, "no jobs found (expected a top-level 'jobs:' list)")
        self.problems[before:] = sorted(self.problems[before:], key=lambda p: p.line or 0)

    def _document(self, doc: yaml.Node | None, file: str) -> int:
        """Check one document; returns how many job entries it has."""
        if doc is None or (isinstance(doc, yaml.ScalarNode) and doc.tag.endswith(":null")):
            return 0  # an empty document
        line = doc.start_mark.line + 1
        if not isinstance(doc, yaml.MappingNode):
            self.add(file, line, f"expected a mapping with a 'jobs:' list (got {_kind(doc)})")
            return 0
        for key_line, key, first_line in _duplicates(doc, set(), deep=False):
            self.add(file, key_line, f"duplicate key {quote(key)} (first at line {first_line})")
        jobs_node: yaml.Node | None = None
        for key, value in doc.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name == "jobs":
                jobs_node = value
            else:
                where = key.start_mark.line + 1
                self.add(file, where, f"unknown top-level key {quote(name)} (expected only 'jobs')")
        if jobs_node is None:
            self.add(file, line, "missing top-level 'jobs:' list")
            return 0
        if not isinstance(jobs_node, yaml.SequenceNode):
            self.add(
                file,
                jobs_node.start_mark.line + 1,
                f"'jobs' must be a list of job mappings (got {_kind(jobs_node)})",
            )
            return 0
        for index, item in enumerate(jobs_node.value):
            self._job(item, index, file)
        return len(jobs_node.value)

    def _job(self, node: yaml.Node, index: int, file: str) -> None:
        line = node.start_mark.line + 1
        label = f"#{index + 1}"
        if self.spent:
            return
        if not isinstance(node, yaml.MappingNode):
            self.add(file, line, f"a job must be a mapping of fields (got {_kind(node)})", label)
            return
        duplicate = False
        for key, value in node.value:
            named = isinstance(key, yaml.ScalarNode) and key.value == "name"
            if named and isinstance(value, yaml.ScalarNode) and value.value:
                label = value.value
                name_line = value.start_mark.line + 1
                # checked before the rest of the job, so that a duplicate is
                # reported even when one of the copies is invalid too
                defined = self.names.get(label)
                if defined is not None:
                    self.add(
                        file,
                        name_line,
                        f"duplicate job name {label!r} (also defined at {defined[0]}:{defined[1]})",
                        label,
                        "name",
                    )
                    duplicate = True
                else:
                    self.names[label] = (file, name_line)
        if not self._affordable(node, file, label):
            return
        for key_line, key, first_line in _duplicates(node, set()):
            self.add(file, key_line, f"duplicate key (first at line {first_line})", label, key)
        constructor = yaml.SafeLoader("")
        raw: dict[str, Any] = {}
        try:
            constructor.flatten_mapping(node)  # resolve '<<' merge keys
        except yaml.MarkedYAMLError as exc:
            self.add(file, _mark_line(exc, line), f"{exc.problem or exc}", label, "<<")
            return
        bad = False
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                where = key.start_mark.line + 1
                self.add(file, where, "field names must be plain strings", label)
                bad = True
                continue
            try:
                raw[key.value] = constructor.construct_object(value, deep=True)
            except yaml.MarkedYAMLError as exc:
                self.add(file, _mark_line(exc, line), f"{exc.problem or exc}", label, key.value)
                bad = True
            except (ValueError, OverflowError) as exc:  # e.g. a timestamp 2001-13-45
                where = value.start_mark.line + 1
                text = str(exc)
                problem = f"cannot read this value: {text[:120]}{'...' * (len(text) > 120)}"
                self.add(file, where, problem, label, key.value)
                bad = True
        if bad:
            return
        try:
            spec = JobSpec.model_validate(raw)
        except ValidationError as exc:
            for path, message in validation_messages(exc):
                where = _line_of(node, path.split(".") if path else [])
                self.add(file, where, message, label, path or None)
            return
        if not duplicate:
            self.specs.append(spec)

    def _affordable(self, node: yaml.MappingNode, file: str, label: str) -> bool:
        """Charge each field of a job to the file's alias budget (see module doc)."""
        for key, value in node.value:
            for part in (key, value):
                problem = self.budget.charge(part)
                if problem is not None:
                    field = key.value if isinstance(key, yaml.ScalarNode) else None
                    self.add(file, key.start_mark.line + 1, problem, label, field)
                    self.spent = self.budget.left < 0
                    return False
        return True


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."


def _mark_line(exc: yaml.MarkedYAMLError, default: int | None) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark else default


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag.endswith(":null"):
        return "nothing"
    return quote(node.value)


def _duplicates(
    node: yaml.Node, seen: set[int], prefix: str = "", deep: bool = True
) -> list[tuple[int, str, int]]:
    """(line, key path, first line) of every repeated mapping key under ``node``.

    ``seen`` holds visited node ids, so aliases are walked once (no blow-up);
    without ``deep`` only the keys of ``node`` itself are checked.
    """
    if id(node) in seen:
        return []
    seen.add(id(node))
    out: list[tuple[int, str, int]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                continue
            path, line = f"{prefix}{key.value}", key.start_mark.line + 1
            if key.value in first:
                out.append((line, path, first[key.value]))
            else:
                first[key.value] = line
            if deep:
                out += _duplicates(value, seen, path + ".")
    elif isinstance(node, yaml.SequenceNode) and deep:
        for i, item in enumerate(node.value):
            out += _duplicates(item, seen, f"{prefix}{i}.")
    return out


def _line_of(node: yaml.Node, path: list[str]) -> int:
    """The 1-based line of the key (or item) at ``path`` under ``node``, else the
    line of the deepest part that exists (a missing field points at its job)."""
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):  # the last one wins, as in YAML
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line

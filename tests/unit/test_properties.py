"""Properties: any input gives a job spec or a clear list of problems, never a traceback.

Over the job model (what the API validates) and the YAML loader (what `etcron
validate` and `apply` read): generated values mix plausible field values,
values at and over the limits, huge numbers, NUL bytes, anchors and aliases.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scheduler.jobfile import JobFileError, load_jobs_text
from scheduler.limits import MAX_SPEC_BYTES
from scheduler.model import JobSpec, spec_fields, validation_messages

SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

_edge_numbers = st.sampled_from(
    [0, -1, 1, 10, 2**63, 10**400, 1e300, 1.5, math.inf, -math.inf, math.nan, 16 * 1024 * 1024]
)
_edge_strings = st.sampled_from(
    ["", " ", "\0", "a\0b", "30s", "1h30m", "500ms", "9" * 400 + "s", "1e400s", "inf", "nan",
     "366d", "100GiB", "16MiB", "9" * 400 + "MiB", "@daily", "@every 400d", "@every 1s",
     "*/5 * * * *", "61 * * * *", "Europe/Berlin", "../../etc/passwd", "x" * 5000,
     "backup", "Backup\n", "forbid", "replace", "é✓", "\udcff"]
)  # fmt: skip
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _edge_numbers
    | st.text(max_size=20)
    | _edge_strings
)
_keys = st.text(max_size=10) | _edge_strings
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from([*spec_fields(), "tiemout", "bogus"])


@st.composite
def raw_specs(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["backup", "a", "-x", "n" * 64]) | _scalars,
                "schedule": st.sampled_from(["@daily", "*/5 * * * *"]) | _scalars,
                "command": st.lists(st.text(max_size=5) | _edge_strings, max_size=3) | _values,
                "shell": st.just("true") | _scalars,
            },
        )
    )
    raw.update(draw(st.dictionaries(_fields, _values, max_size=4)))
    return raw


def _check_problems(problems: list[tuple[str, str]]) -> None:
    assert problems
    for field, message in problems:
        assert message and len(message) < 1000 and len(field) < 300, (field[:300], message[:1000])


@SETTINGS
@given(raw_specs())
def test_job_model_gives_a_spec_or_problems(raw: dict[str, Any]) -> None:
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        _check_problems(validation_messages(exc))
        return
    data = spec.to_json()
    assert len(data) <= MAX_SPEC_BYTES
    assert b"\\u0000" not in data  # no NUL byte in any string
    assert JobSpec.from_json(data) == spec
    json.loads(data)  # finite numbers only: NaN/Infinity are not JSON


_TOKENS = st.sampled_from(
    ["jobs:", "\n", "  - ", "    ", "name: backup", "name: other", "schedule: '@daily'",
     "shell: 'true'", "command: [", "]", "{", "}", ", ", ": ", "&a ", "&b ", "*a", "*b", "<<: ",
     "env: ", "A", "timeout: ", "output_limit: ", "labels: ", "description: ", '"\\0"',
     "9" * 50, "9" * 5000, "2001-13-45", ".inf", ".nan", "1e400", "100GiB", "!!python/name:os.system",
     "!custom ", "---\n", "- ", "[", "? ", "|\n", "'", '"', "#", "\t", "%YAML 1.1\n"]
)  # fmt: skip


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 2))
    if kind == 0:  # token soup: mostly invalid YAML, sometimes not
        return "".join(draw(st.lists(_TOKENS | st.text(max_size=3), max_size=40)))
    if kind == 1:  # valid YAML holding arbitrary job-like mappings
        jobs = draw(st.lists(raw_specs(), max_size=3))
        try:
            return yaml.safe_dump({"jobs": jobs}, allow_unicode=True)
        except (yaml.YAMLError, UnicodeEncodeError, ValueError):
            return "jobs: []\n"
    # one job whose fields use an anchor defined in the first job
    value = yaml.safe_dump(draw(_values), default_flow_style=True).strip().replace("\n", " ")
    uses = draw(st.integers(0, 30))
    aliases = ", ".join(["*v"] * uses)
    return (
        "jobs:\n  - name: one\n    schedule: '@daily'\n    shell: 'true'\n"
        f"    labels: {{a: &v {value}}}\n"
        f"  - name: two\n    schedule: '@daily'\n    command: [{aliases}]\n"
    )


@SETTINGS
@given(yaml_texts())
def test_yaml_loader_gives_specs_or_problems(text: str) -> None:
    try:
        specs = load_jobs_text(text, "jobs.yaml")
    except JobFileError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file == "jobs.yaml" and p.message and len(p.message) < 1000, p
            assert p.line is None or 1 <= p.line <= len(text.splitlines()) + 2, p
        return
    for spec in specs:
        assert len(spec.to_json()) <= MAX_SPEC_BYTES

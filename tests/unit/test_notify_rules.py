"""Notification rules, events, webhook signatures and the did-not-run tick walk (pure)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.config import Config, ConfigError, load_config
from scheduler.jobfile import JobFileError, load_jobs_text
from scheduler.master.didnotrun import DidNotRun
from scheduler.model import JobSpec
from scheduler.notify.events import EventState, Notice, raised
from scheduler.notify.rules import Event, NotifyRule, redact, rules_for
from scheduler.notify.sinks import payload, signature
from scheduler.runs import RunRecord, RunStatus, tick_ms

JOB = """\
jobs:
  - name: backup
    schedule: "30 2 * * *"
    command: ["/bin/true"]
    notify:
{rules}
"""


def problems(rules: str) -> list[str]:
    with pytest.raises(JobFileError) as info:
        load_jobs_text(JOB.format(rules=rules), "jobs.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("rules", "field", "message"),
    [
        ("      - {on: [failed]}", "notify.0", "set exactly one of 'webhook', 'slack' or 'email'"),
        (
            "      - {on: [failed], webhook: 'http://a/x', email: a@b.c}",
            "notify.0",
            "set exactly one of 'webhook', 'slack' or 'email' (got webhook, email)",
        ),
        ("      - {on: [late], webhook: 'http://a/x'}", "notify.0", "set 'late' to its threshold"),
        (
            "      - {on: [failed], overran: 1h, email: a@b.c}",
            "notify.0",
            "'overran' is set but 'on' does not list 'overran'",
        ),
        ("      - {on: [fail], email: a@b.c}", "notify.0.on.0", "must be one of 'failed'"),
        ("      - {on: [], email: a@b.c}", "notify.0.on", ""),
        ("      - {on: [failed, failed], email: a@b.c}", "notify.0", "lists an event twice"),
        ("      - {on: [failed], webhook: 'ftp://a/x'}", "notify.0", "not an http:// or https://"),
        (
            "      - {on: [failed], slack: 'hooks.slack.com'}",
            "notify.0",
            "not an http:// or https://",
        ),
        (
            "      - {on: [failed], email: 'a@b.c\\nBcc: x@y.z'}",
            "notify.0",
            "is not an address like ops@example.com",
        ),
        ("      - {on: [late], late: soon, email: a@b.c}", "notify.0.late", "expected a duration"),
        ("      - {on: [failed], email: a@b.c, sms: '123'}", "notify.0.sms", "unknown field"),
    ],
)
def test_bad_rules_name_the_file_line_job_and_field(rules: str, field: str, message: str) -> None:
    found = problems(rules)
    assert len(found) == 1, found
    assert found[0].startswith(f"jobs.yaml:6: job 'backup': field '{field}': "), found
    assert message in found[0], found


def test_a_url_in_an_error_is_redacted() -> None:
    (found,) = problems("      - {on: [failed], webhook: 'ftp://h/secret-token'}")
    assert "secret-token" not in found and "ftp://h/..." in found


def test_too_many_rules_is_refused() -> None:
    rules = "\n".join("      - {on: [failed], email: a@b.c}" for _ in range(21))
    (found,) = problems(rules)
    assert "field 'notify': notify has 21 rules; at most 20" in found


def test_a_good_rule_round_trips_and_a_bare_yaml_on_key_is_read_as_on() -> None:
    rules = "      - on: [failed, late, overran]\n        late: 5m\n        overran: 1h30m\n        webhook: https://h/x"
    (job,) = load_jobs_text(JOB.format(rules=rules), "jobs.yaml")
    assert job.notify is not None
    rule = job.notify[0]
    assert rule.on == [Event.FAILED, Event.LATE, Event.OVERRAN]
    assert (rule.late, rule.overran) == (300.0, 5400.0)
    assert rule.sink == ("webhook", "https://h/x")
    again = JobSpec.from_json(job.to_json())
    assert again == job and len(rule.sink_id) == 12
    # JSON turns YAML's boolean key into "true": still `on`
    assert NotifyRule.model_validate({"true": ["failed"], "email": "a@b.c"}).on == [Event.FAILED]


def test_rules_for_a_job_are_its_own_else_the_defaults() -> None:
    d = [NotifyRule(on=[Event.FAILED], email="ops@example.com")]
    own = [NotifyRule(on=[Event.MISSED], slack="https://hooks.example.com/x")]
    assert rules_for(None, d) == d
    assert rules_for(own, d) == own
    assert rules_for([], d) == []  # `notify: []` turns them off


def test_config_notify_section(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "notify:\n  defaults:\n    - {on: [failed, missed], email: ops@example.com}\n"
        "  smtp: {host: mail, port: 25, starttls: false, from: cron@example.com}\n"
    )
    c = load_config(cfg, environ={})
    assert c.notify.defaults[0].on == [Event.FAILED, Event.MISSED]
    assert c.notify.smtp.from_ == "cron@example.com" and c.notify.smtp.port == 25
    cfg.write_text("notify:\n  defaults:\n    - {on: [failed], webhook: nope}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, environ={})
    assert str(info.value) == (
        f"{cfg}: notify.defaults.0: webhook 'nope' is not an http:// or https:// URL with a host"
    )
    with pytest.raises(ConfigError, match=r"notify\.attempts"):
        load_config(None, environ={"ETCRON_NOTIFY__ATTEMPTS": "0"})


def test_redact_hides_paths_queries_and_credentials() -> None:
    assert (
        redact("https://user:pw@hooks.slack.com/services/T0/B0/XYZ?x=1")
        == "https://hooks.slack.com/..."
    )
    assert redact("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/..."
    assert redact("ops@example.com") == "ops@example.com"


T = datetime(2026, 1, 1, 2, 30, tzinfo=UTC)


def rec(
    status: RunStatus, *, start: float | None = 0.5, took: float | None = 1.0, **kw: object
) -> RunRecord:
    s = T + timedelta(seconds=start) if start is not None else None
    e = s + timedelta(seconds=took) if s is not None and took is not None and status.final else None
    return RunRecord(job="backup", run_id=kw.pop("run_id", "20260101T023000Z-aaaaaa"), tick=T,  # type: ignore[arg-type]
                     status=status, start=s, end=e, **kw)  # type: ignore[arg-type]  # fmt: skip


ALL = NotifyRule(on=list(Event), late="10s", overran="1m", email="a@b.c")


@pytest.mark.parametrize(
    ("record", "previous_bad", "events"),
    [
        (rec(RunStatus.FAILED), None, [Event.FAILED]),
        (rec(RunStatus.TIMED_OUT), False, [Event.FAILED]),
        (rec(RunStatus.LOST), None, [Event.FAILED]),
        (rec(RunStatus.SUCCEEDED), False, [Event.SUCCEEDED]),
        (rec(RunStatus.SUCCEEDED), True, [Event.SUCCEEDED, Event.RECOVERED]),
        (rec(RunStatus.MISSED, start=None), None, [Event.MISSED]),
        (rec(RunStatus.SKIPPED, start=None), True, []),
        (rec(RunStatus.RUNNING, start=11), None, [Event.LATE]),
        (rec(RunStatus.RUNNING, start=11, manual=True), None, []),
        (rec(RunStatus.SUCCEEDED, took=61), None, [Event.SUCCEEDED, Event.OVERRAN]),
        (rec(RunStatus.RUNNING), None, []),
    ],
)
def test_events_raised_by_a_record(
    record: RunRecord, previous_bad: bool | None, events: list[Event]
) -> None:
    now = T + timedelta(seconds=30)
    assert raised(record, ALL, previous_bad=previous_bad, now=now) == events
    only_failed = NotifyRule(on=[Event.FAILED], email="a@b.c")
    assert raised(record, only_failed, previous_bad=previous_bad, now=now) == [
        e for e in events if e is Event.FAILED
    ]


def test_overran_while_still_running() -> None:
    running = rec(RunStatus.RUNNING)
    assert raised(running, ALL, previous_bad=None, now=T + timedelta(seconds=30)) == []
    assert raised(running, ALL, previous_bad=None, now=T + timedelta(seconds=62)) == [Event.OVERRAN]


def test_recovered_needs_the_previous_final_record_to_be_bad() -> None:
    state = EventState()
    assert state.see(rec(RunStatus.FAILED, run_id="20260101T023000Z-000001")) is None
    assert state.see(rec(RunStatus.SKIPPED, run_id="20260101T023001Z-000002")) is None
    assert state.see(rec(RunStatus.RUNNING, run_id="20260101T023002Z-000003")) is None
    assert ("backup", "20260101T023002Z-000003") in state.running
    assert state.see(rec(RunStatus.SUCCEEDED, run_id="20260101T023002Z-000003")) is True
    assert not state.running
    assert state.see(rec(RunStatus.SUCCEEDED, run_id="20260101T023002Z-000003")) is None  # again
    assert state.see(rec(RunStatus.SUCCEEDED, run_id="20260101T023003Z-000004")) is False
    assert state.see(rec(RunStatus.FAILED, run_id="20260101T022959Z-000000")) is None  # older


def test_webhook_payload_and_signature() -> None:
    r = rec(RunStatus.FAILED, exit_code=3, worker="w1", output_tail="x" * 100 + "last line\n")
    body = payload(Notice(Event.FAILED, ALL, r), 10)
    assert body["path"] == "/v1/jobs/backup/runs/20260101T023000Z-aaaaaa"
    assert (body["job"], body["status"], body["exit_code"], body["worker"]) == (
        "backup",
        "failed",
        3,
        "w1",
    )
    assert body["output_tail"] == "last line\n" and body["duration"] == 1.0
    raw = b'{"a":1}'
    expected = hmac.new(b"k3y", b"1700000000." + raw, hashlib.sha256).hexdigest()
    assert signature(b"k3y", "1700000000", raw) == f"sha256={expected}"


def detector(**notify: object) -> DidNotRun:
    cfg = Config.model_validate({"notify": {"did_not_run_grace": 5, **notify}})
    return DidNotRun(None, None, cfg, identity="m", is_leader=asyncio.Event())  # type: ignore[arg-type]


def test_did_not_run_walk_is_bounded_and_waits_for_the_deadline() -> None:
    d = detector(did_not_run_max_ticks=5)
    job = JobSpec(name="j", schedule="@every 10s", shell="true", starting_deadline="5s")
    t0 = tick_ms(T)
    # the tick at t0+10s is due until t0+10s+5s(deadline)+5s(grace)
    assert d.overdue(job, t0, t0 + 19_999) is None
    o = d.overdue(job, t0, t0 + 20_000)
    assert o is not None and o.ticks == [t0 + 10_000] and o.more == 0
    o = d.overdue(job, t0, t0 + 50_000)
    assert o is not None and o.ticks == [t0 + 10_000 * i for i in range(1, 5)] and o.more == 0
    # a day of silence: 5 records, the last one the latest overdue tick
    o = d.overdue(job, t0, t0 + 86_400_000)
    assert o is not None and len(o.ticks) == 5
    assert o.ticks[:4] == [t0 + 10_000 * i for i in range(1, 5)]
    assert o.ticks[-1] == t0 + 86_400_000 - 10_000
    assert 8000 < o.more < 9000
    assert d.overdue(job, -1, t0 + 86_400_000) is None  # no fence and no look-back

"""The job table's admission: judged once per revision; credential file checks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.config import Config, ConfigError, EtcdConfig, PolicyConfig, WorkerConfig
from scheduler.etcd.client import KeyValue
from scheduler.etcd.listwatch import Batch, Event, EventKind, Snapshot
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.signing import Signer, Verifier, keygen
from workers.admission import Admission, Verdict, default_run_as
from workers.credentials import check_credentials
from workers.refusals import Refusals
from workers.state import JobTable

P = "/cron/jobs/"


def kv(name: str, value: bytes, rev: int) -> KeyValue:
    return KeyValue(P + name, value, rev, rev, 1, 0)


class CountingVerifier(Verifier):
    calls = 0

    def check(self, env):  # type: ignore[no-untyped-def]
        CountingVerifier.calls += 1
        return super().check(env)


def test_each_revision_is_verified_once_and_refusals_are_queued_once(tmp_path: Path) -> None:
    key, pub, _ = keygen(tmp_path)
    signer = Signer.from_file(key)
    verifier = CountingVerifier(list(Verifier.from_files([pub]).keys.values()))
    table = JobTable(P, Admission(WorkerConfig(default_user=""), verifier))
    good = JobSpec(name="good", schedule="@every 1s", command=["/bin/true"])
    bad = JobSpec(name="bad", schedule="@every 1s", command=["/bin/true"])
    kvs = {"good": kv("good", signer.seal(good.to_json()), 5), "bad": kv("bad", bad.to_json(), 6)}
    assert table.apply(Snapshot(6, {P + k: v for k, v in kvs.items()})) == [("good", good)]
    assert set(table.refused) == {"bad"} and table.refused["bad"].reason == "unsigned"
    assert [(n, r) for n, r, _ in table.new_refusals] == [("bad", 6)]
    table.new_refusals.clear()
    assert CountingVerifier.calls == 2
    # a re-list (reconnect, compaction) at the same revisions: nothing verified again
    assert table.apply(Snapshot(9, {P + k: v for k, v in kvs.items()})) == []
    assert CountingVerifier.calls == 2 and not table.new_refusals
    # a new revision of the refused job, now signed: admitted
    ev = Event(EventKind.PUT, kv("bad", signer.seal(bad.to_json()), 10))
    assert table.apply(Batch(10, [ev])) == [("bad", bad)]
    assert not table.refused and CountingVerifier.calls == 3


def test_policy_refusal_names_the_rule() -> None:
    cfg = WorkerConfig(default_user="", policy=PolicyConfig(commands=["/usr/bin/*"]))
    table = JobTable(P, Admission(cfg, None))
    spec = JobSpec(name="j", schedule="@every 1s", shell="echo hi")
    table.apply(Snapshot(3, {P + "j": kv("j", spec.to_json(), 3)}))
    verdict = table.refused["j"]
    assert verdict.reason == "policy" and verdict.refusal.startswith("policy.commands:")
    assert "j" not in table.jobs


def test_default_user_applies_only_to_a_root_worker() -> None:
    assert default_run_as(WorkerConfig(), euid=0) == "nobody"
    assert default_run_as(WorkerConfig(default_user=""), euid=0) is None
    assert default_run_as(WorkerConfig(), euid=1000) is None


def test_credential_files_others_can_read_stop_the_worker(tmp_path: Path) -> None:
    pw = tmp_path / "etcd.password"
    pw.write_text("secret\n")
    cfg = Config(etcd=EtcdConfig(password_file=pw))
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match=r"etcd\.password_file: .* may be read by any user"):
        check_credentials(cfg, euid=0)
    pw.chmod(0o640)
    assert any("may be read by its group" in w for w in check_credentials(cfg, euid=0))
    pw.chmod(0o600)
    owner = pw.stat().st_uid
    assert [w for w in check_credentials(cfg, euid=owner) if "not root" not in w] == []
    warnings = check_credentials(cfg, euid=12345)
    assert any("owned by uid" in w for w in warnings)
    assert any("not root" in w for w in warnings)


def test_refusals_are_recorded_only_where_the_job_is_aimed_and_not_suspended() -> None:
    class Counts:
        def __init__(self) -> None:
            self.reasons: list[str] = []

        def refused(self, reason: str) -> None:
            self.reasons.append(reason)

    counts = Counts()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rep = Refusals(
        Keyspace("/cron"),
        "w1",
        {"disk": "ssd"},
        counts,
        lambda: now,  # type: ignore[arg-type]
    )
    table = JobTable(P)
    base = {"schedule": "@every 1s", "command": ["/bin/true"]}
    specs = {
        "here": JobSpec(name="here", selector={"disk": "ssd"}, **base),
        "elsewhere": JobSpec(name="elsewhere", selector={"disk": "hdd"}, **base),
        "paused": JobSpec(name="paused", suspend=True, **base),
    }
    table.new_refusals = [(n, 7, Verdict(s, "not signed", "unsigned")) for n, s in specs.items()]
    [rec] = rep.report(table)
    assert rec.job == "here" and rec.worker == "w1" and rec.tick == now
    assert rec.message == "refused (definition revision 7): not signed"
    assert counts.reasons == ["unsigned"] * 3 and table.new_refusals == []

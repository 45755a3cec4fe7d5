"""Signed jobs, worker policy and the worker's secrets, against a real etcd.

With ``worker.trusted_key_files`` set, nothing written straight into etcd
starts a process: unsigned values, bad signatures and signatures by an
untrusted key are refused, recorded once per revision and counted, and the
worker goes on with the others. Policy refusals name their rule. A root worker
runs jobs without ``user`` as ``worker.default_user``, who cannot read the
worker's credential files.
"""

from __future__ import annotations

import json
import os
import pwd
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.runs import RunRecord, RunStatus
from scheduler.signing import Signer, keygen, unwrap
from scheduler.store import JobStore
from tests.integration.test_cli import _env
from tests.integration.test_daemon_errors import daemon, plain_lines
from tests.support import wait_for
from tests.support.cluster import make_config, runs_of, workers


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _marker_job(name: str, marker: Path, **kw: object) -> JobSpec:
    return JobSpec(name=name, schedule="* * * * * *", shell=f"echo ran >> {marker}", **kw)  # type: ignore[arg-type]


async def _refusals(client: EtcdClient, ks: Keyspace, job: str) -> list[RunRecord]:
    return [r for r in await runs_of(client, ks, job) if r.message.startswith("refused")]


async def test_only_jobs_signed_by_a_trusted_key_run(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    key, pub, _ = keygen(tmp_path / "trusted")
    stranger, _, _ = keygen(tmp_path / "stranger")
    signer, foreign = Signer.from_file(key), Signer.from_file(stranger)
    marks = {n: tmp_path / n for n in ("good", "unsigned", "forged", "untrusted")}
    specs = {n: _marker_job(n, m).to_json() for n, m in marks.items()}
    # a valid signature over other bytes: the stored spec was changed after signing
    forged = json.loads(signer.seal(specs["forged"]))
    forged["spec"] = forged["spec"].replace("echo ran", "echo pwned")
    cfg = make_config(etcd_endpoints, prefix, "w1", trusted_key_files=[pub])
    async with workers([cfg]) as [w]:
        await client.put(ks.job("good"), signer.seal(specs["good"]))
        await client.put(ks.job("unsigned"), specs["unsigned"])
        await client.put(ks.job("forged"), json.dumps(forged).encode())
        await client.put(ks.job("untrusted"), foreign.seal(specs["untrusted"]))
        # a manual run request written straight into etcd does not help either
        await client.put(ks.trigger("unsigned", "r1"), b"{}")
        await wait_for(lambda: _lines(marks["good"]) >= 3, timeout=15)

        async def all_refused() -> dict[str, list[RunRecord]] | None:
            found = {n: await _refusals(client, ks, n) for n in ("unsigned", "forged", "untrusted")}
            return found if all(found.values()) else None

        refused = await wait_for(all_refused, timeout=10)
        metrics = w.metrics.render().decode()
        counted = dict(w.metrics.refusals)
    for name in ("unsigned", "forged", "untrusted"):
        assert not marks[name].exists(), f"{name} ran"
        # one record per revision, though every second was a tick
        [rec] = refused[name]
        assert rec.status is RunStatus.MISSED and rec.worker == "w1"
    assert "not signed" in refused["unsigned"][0].message
    assert "does not verify" in refused["forged"][0].message
    assert "does not trust" in refused["untrusted"][0].message
    assert counted == {"unsigned": 1, "bad_signature": 1, "untrusted_key": 1}
    assert 'etcron_job_refusals_total{reason="unsigned"} 1.0' in metrics
    assert "etcron_jobs_refused 3.0" in metrics


async def test_master_signs_and_a_rotated_key_resigns_on_apply(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    old_key, old_pub, old_id = keygen(tmp_path / "old")
    new_key, new_pub, new_id = keygen(tmp_path / "new")
    mark = tmp_path / "ran"
    spec = _marker_job("rotated", mark)
    old_store = JobStore(client, ks, signer=Signer.from_file(old_key))
    new_store = JobStore(client, ks, signer=Signer.from_file(new_key))
    both = make_config(etcd_endpoints, prefix, "w1", trusted_key_files=[old_pub, new_pub])
    async with workers([both]):
        await old_store.apply([spec], prune=False, dry_run=False)
        await wait_for(lambda: _lines(mark) >= 1, timeout=10)
        # the master switches to the new key: apply re-signs the unchanged job
        plan = await new_store.apply([spec], prune=False, dry_run=False)
        assert plan.names("update") == ["rotated"]
        kv, _ = await client.get(ks.job("rotated"))
        assert kv is not None and unwrap(kv.value).key_id == new_id != old_id
        assert (await new_store.plan([spec], prune=False)).names("unchanged") == ["rotated"]
        seen = _lines(mark)
        await wait_for(lambda: _lines(mark) >= seen + 2, timeout=10)
    # the old key retired from the workers: the job still runs
    only_new = make_config(etcd_endpoints, prefix, "w2", trusted_key_files=[new_pub])
    async with workers([only_new]) as [w]:
        seen = _lines(mark)
        await wait_for(lambda: _lines(mark) >= seen + 2, timeout=10)
        assert not w.table.refused
    assert (await new_store.get_job("rotated")) is not None  # the master reads signed values


async def test_jobs_outside_the_worker_policy_are_refused_with_the_rule(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    ks = Keyspace(prefix)
    policy = {"commands": ["/bin/*", "/usr/bin/*"], "env": ["LANG"], "max_timeout": "1m"}
    cfg = make_config(etcd_endpoints, prefix, "w1", policy=policy)
    every = {"schedule": "* * * * * *"}
    jobs = [
        JobSpec(name="ok", command=["/bin/true"], timeout=10, **every),
        JobSpec(name="cmd", command=["/sbin/reboot"], timeout=10, **every),
        JobSpec(name="env", command=["/bin/true"], timeout=10, env={"LD_PRELOAD": "x"}, **every),
        JobSpec(name="forever", command=["/bin/true"], **every),
    ]
    async with workers([cfg]):
        for j in jobs:
            await client.put(ks.job(j.name), j.to_json())

        async def done() -> bool:
            ok = [r for r in await runs_of(client, ks, "ok") if r.status is RunStatus.SUCCEEDED]
            refused = [await _refusals(client, ks, n) for n in ("cmd", "env", "forever")]
            return len(ok) >= 2 and all(refused)

        await wait_for(done, timeout=15)
        rules = {n: [r.message for r in await _refusals(client, ks, n)] for n in ("cmd", "env")}
        forever = await runs_of(client, ks, "forever")
    assert "policy.commands: program '/sbin/reboot'" in rules["cmd"][0]
    assert "policy.env: variable 'LD_PRELOAD'" in rules["env"][0]
    [rec] = forever
    assert "policy.max_timeout: the job sets no timeout" in rec.message


@pytest.fixture
def secret() -> Iterator[Path]:
    """A credential file as it should be: 0600, owned by the worker's user (root), in
    a directory any user may look in, so only the file's own mode protects it."""
    with tempfile.TemporaryDirectory(prefix="etcron-secret-") as d:
        Path(d).chmod(0o755)
        path = Path(d) / "etcd.password"
        path.write_text("s3cret\n")
        path.chmod(0o600)
        yield path


@pytest.mark.skipif(os.geteuid() != 0, reason="run-as needs root")
async def test_a_root_worker_runs_jobs_as_nobody_who_cannot_read_its_secrets(
    client: EtcdClient, etcd_endpoints: list[str], prefix: str, secret: Path
) -> None:
    ks = Keyspace(prefix)
    nobody = pwd.getpwnam("nobody").pw_uid
    cfg = make_config(etcd_endpoints, prefix, "w1", default_user="nobody", allow_run_as=True)
    cfg.etcd.password_file = secret  # no username: etcd auth is off here, the file is unused
    job = JobSpec(name="thief", schedule="@every 3600s", shell=f"id -u; cat {secret}")
    as_root = JobSpec(name="root", schedule="@every 3600s", user="root", shell="id -u")
    async with workers([cfg]) as [w]:
        await client.put(ks.job("thief"), job.to_json())
        await client.put(ks.job("root"), as_root.to_json())
        await client.put(ks.trigger("thief", "r1"), b"{}")

        async def ended() -> RunRecord | None:
            recs = [r for r in await runs_of(client, ks, "thief") if r.status.final]
            return recs[0] if recs else None

        rec = await wait_for(ended, timeout=15)
        refused = await wait_for(lambda: _refusals(client, ks, "root"), timeout=10)
        assert "root" in w.table.refused
    assert rec.status is RunStatus.FAILED, rec
    assert rec.output_tail.splitlines()[0] == str(nobody)
    assert "Permission denied" in rec.output_tail and "s3cret" not in rec.output_tail
    assert "policy.users: root runs only jobs with user: root" in refused[0].message


def _exposed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A password file any user may read, a signing key its group may read, a junk key."""
    pw = tmp_path / "etcd.password"
    pw.write_text("x\n")
    pw.chmod(0o644)
    key, _, _ = keygen(tmp_path / "k")
    key.chmod(0o640)
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    return pw, key, junk


async def test_daemons_with_exposed_or_bad_keys_exit_2_with_one_line(
    etcd_endpoints: list[str], prefix: str, tmp_path: Path
) -> None:
    pw, key, junk = _exposed(tmp_path)
    base = {
        "ETCRON_ETCD__ENDPOINTS": ",".join(etcd_endpoints),
        "ETCRON_ETCD__PREFIX": prefix,
        "ETCRON_LOG__FORMAT": "json",
        "ETCRON_WORKER__LISTEN": "off",
    }
    cases = [
        ("worker", {"ETCRON_ETCD__PASSWORD_FILE": str(pw)}, "may be read by any user"),
        ("worker", {"ETCRON_WORKER__TRUSTED_KEY_FILES": str(junk)}, "not a PEM trusted key"),
        (
            "master",
            {"ETCRON_MASTER__SIGNING_KEY_FILE": str(key), "ETCRON_MASTER__TOKEN": "t" * 32},
            "signing key is accessible to group or others",
        ),
    ]
    for what, extra, needle in cases:
        code, err = await daemon(what, env=_env(**base, **extra))
        assert code == 2, err
        [line] = plain_lines(err)
        assert line.startswith("error: ") and needle in line, line

"""``etcron audit`` and ``etcron rollout`` through the real script against a real master."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import Master, write
from tests.integration.test_cli import m as m
from tests.integration.test_cli import master as master

V1 = """\
jobs:
  - name: backup
    schedule: "0 3 * * *"
    command: ["/usr/bin/backup", "--all"]
"""
V2 = V1.replace('"0 3 * * *"', '"30 4 * * *"')


async def _clean(m: Master) -> None:
    await m.etcd.delete(m.ks.audit, prefix=True)
    await m.etcd.delete(m.ks.history, prefix=True)


async def _stored_schedule(m: Master, name: str) -> str | None:
    kv, _ = await m.etcd.get(m.ks.job(name))
    return None if kv is None else str(json.loads(kv.value)["schedule"])


async def test_audit_lists_every_change_with_who_and_filters(m: Master, tmp_path: Path) -> None:
    await _clean(m)
    assert (await m.run("apply", "-f", str(write(tmp_path, V1)))).code == 0
    other = V1.replace("name: backup", "name: other")
    assert (await m.run("apply", "-f", str(write(tmp_path, other, "o.yaml")))).code == 0
    assert (await m.run("suspend", "backup")).code == 0
    r = await m.run("audit", "-o", "json")
    assert r.code == 0, r.err
    entries = json.loads(r.out)["entries"]
    assert [(e["operation"], e["jobs"]) for e in entries] == [
        ("suspend", ["backup"]),
        ("apply", ["other"]),
        ("apply", ["backup"]),
    ]
    assert all(e["who"] == "token" and e["address"].startswith("127.0.0.1:") for e in entries)
    r = await m.run("audit", "--job", "backup", "--since", "1h")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split()[:5] == ["TIME", "WHO", "ADDRESS", "OPERATION", "JOBS"]
    assert len(lines) == 3 and all("backup" in line for line in lines[1:])
    assert "suspend" in lines[1] and "backup: update v2 suspend" in lines[1]
    r = await m.run("audit", "--limit", "1", "-o", "json")
    assert len(json.loads(r.out)["entries"]) == 1
    r = await m.run("audit", "--since", "soon")
    assert r.code == 2 and "since" in r.err


async def test_rollout_history_diff_undo(m: Master, tmp_path: Path) -> None:
    await _clean(m)
    assert (await m.run("apply", "-f", str(write(tmp_path, V1)))).code == 0
    assert (await m.run("apply", "-f", str(write(tmp_path, V2, "v2.yaml")))).code == 0
    r = await m.run("rollout", "history", "backup")
    assert r.code == 0, r.err
    rows = [line.split() for line in r.out.splitlines()[1:]]
    assert [(row[0], row[3]) for row in rows] == [("2", "token"), ("1", "token")]
    r = await m.run("rollout", "diff", "backup", "1", "2")
    assert r.code == 1, r.err
    assert "-schedule: 0 3 * * *" in r.out and "+schedule: 30 4 * * *" in r.out
    assert "--- backup version 1" in r.out
    assert (await m.run("rollout", "diff", "backup", "2", "2")).code == 0
    assert (await m.run("rollout", "diff", "backup", "1", "9")).code == 2
    r = await m.run("rollout", "undo", "backup")
    assert r.code == 0, r.err
    assert "restored version 1 of backup" in r.out
    assert await _stored_schedule(m, "backup") == "0 3 * * *"
    r = await m.run("rollout", "history", "backup", "-o", "json")
    newest = json.loads(r.out)["versions"][0]
    assert (newest["version"], newest["operation"], newest["restored"]) == (3, "rollback", 1)
    r = await m.run("audit", "--job", "backup", "--limit", "1", "-o", "json")
    assert json.loads(r.out)["entries"][0]["operation"] == "rollback"


async def test_rollout_undo_refuses_a_concurrent_change(m: Master, tmp_path: Path) -> None:
    await _clean(m)
    assert (await m.run("apply", "-f", str(write(tmp_path, V1)))).code == 0
    seen, _ = await m.etcd.get(m.ks.job("backup"))
    assert seen is not None
    assert (await m.run("apply", "-f", str(write(tmp_path, V2, "v2.yaml")))).code == 0
    # the revision seen before someone else's apply: the undo must not land
    r = await m.run("rollout", "undo", "backup", "--to", "1", "--if-match", str(seen.mod_revision))
    assert r.code == 1
    assert "changed by someone else" in r.err and "changed since it was read" in r.err
    assert await _stored_schedule(m, "backup") == "30 4 * * *"


async def test_rollout_undo_after_delete_restores(m: Master, tmp_path: Path) -> None:
    await _clean(m)
    assert (await m.run("apply", "-f", str(write(tmp_path, V1)))).code == 0
    assert (await m.run("delete", "job", "backup")).code == 0
    assert await _stored_schedule(m, "backup") is None
    r = await m.run("rollout", "undo", "backup")
    assert r.code == 0, r.err
    assert await _stored_schedule(m, "backup") == "0 3 * * *"
    r = await m.run("rollout", "undo", "nope")
    assert r.code == 1 and "nope" in r.err

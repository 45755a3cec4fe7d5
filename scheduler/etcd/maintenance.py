"""Cluster maintenance calls: compaction, status, the member list, alarms and
defragmentation. :class:`scheduler.etcd.client.EtcdClient` inherits them; they go
through the same routing, deadlines and error mapping as every other call
(:mod:`scheduler.etcd.routing`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from etcd3aio.maintenance import AlarmType

from scheduler.etcd.errors import EtcdCompacted
from scheduler.etcd.members import Member
from scheduler.etcd.routing import MemberRouter

__all__ = ["Maintenance"]


class Maintenance(MemberRouter):
    """The maintenance calls of :class:`~scheduler.etcd.client.EtcdClient`."""

    async def compact(self, revision: int) -> None:
        try:
            await self._call(f"compact {revision}", lambda m, t: m.kv.compact(revision, timeout=t))
        except EtcdCompacted:
            return

    async def status(self) -> dict[str, int]:
        """Leader id, raft term, revision and database size of the member that answers."""
        resp = await self._call("status", lambda m, t: m.maintenance.status(timeout=t))
        return {
            "leader": int(resp.leader),
            "raft_term": int(resp.raftTerm),
            "revision": int(resp.header.revision),
            "db_size": int(resp.dbSize),
            "member": int(resp.header.member_id),
        }

    async def member_list(self) -> list[dict[str, Any]]:
        """The cluster's members: id, name, client URLs, learner or not."""
        resp = await self._call("member list", lambda m, t: m.cluster.member_list(timeout=t))
        return [
            {
                "id": int(x.ID),
                "name": str(x.name),
                "client_urls": [str(u) for u in x.clientURLs],
                "learner": bool(x.isLearner),
            }
            for x in resp.members
        ]

    async def alarms(self) -> list[str]:
        """The cluster's active alarms by name (``NOSPACE``, ``CORRUPT``), one per member."""
        resp = await self._call("alarms", lambda m, t: m.maintenance.alarms(timeout=t))
        names = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
        return [names.get(int(a.alarm), str(a.alarm)) for a in resp.alarms]

    async def disarm(self) -> int:
        """Deactivate every active alarm (each is a member and a type, as ``etcdctl
        alarm disarm`` does); returns how many."""
        resp = await self._call("alarms", lambda m, t: m.maintenance.alarms(timeout=t))
        for a in resp.alarms:
            call = functools.partial(_deactivate, int(a.alarm), int(a.memberID))
            await self._call("disarm", call)
        return len(resp.alarms)

    async def defragment_all(self, *, timeout: float = 60.0) -> int:
        """Defragment every member, one at a time (each blocks its member while it
        runs); returns how many answered."""
        done = 0
        for m in self._members:
            with contextlib.suppress(Exception):
                await m.maintenance.defragment(timeout=timeout)
                done += 1
        return done


async def _deactivate(kind: int, member_id: int, m: Member, timeout: float) -> Any:
    return await m.maintenance.alarm_deactivate(
        AlarmType(kind), member_id=member_id, timeout=timeout
    )

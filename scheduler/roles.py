"""The etcd roles etcron's processes need, as data: one source for the setup
script (``deploy/etcd/setup-auth.sh`` prints from it), the tests and the docs.

Masters write everything under the prefix. Workers read job definitions and
the requests masters make (manual runs ``trigger/``, kills ``killer/``, the
output ``budget``, master clocks), and write only what running jobs needs:
locks, tick fences, their registration, run records and output, the ``taken``
mark of a manual-run request they claimed, ``replace`` requests between workers,
and repair notes. What a stolen worker credential can and cannot do is in
docs/security.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

Access = Literal["read", "readwrite"]

MASTER_ROLE = "etcron-master"
WORKER_ROLE = "etcron-worker"


@dataclass(frozen=True)
class Grant:
    path: str
    """Relative to the prefix: ``jobs/`` (a directory, with its trailing slash), or a key."""
    access: Access

    @property
    def is_dir(self) -> bool:
        return self.path == "" or self.path.endswith("/")

    def key_range(self, prefix: str) -> tuple[str, str | None]:
        """(key, range end) for etcd; range end None: the one key."""
        key = f"{prefix}/{self.path}"
        if not self.is_dir:
            return key, None
        return key, key[:-1] + chr(ord(key[-1]) + 1)


ROLES: dict[str, tuple[Grant, ...]] = {
    MASTER_ROLE: (Grant("", "readwrite"),),
    WORKER_ROLE: (
        Grant("jobs/", "read"),
        Grant("masters/", "read"),
        Grant("trigger/", "read"),
        Grant("killer/", "read"),
        Grant("budget", "read"),
        Grant("lock/", "readwrite"),
        Grant("ticks/", "readwrite"),
        Grant("workers/", "readwrite"),
        Grant("runs/", "readwrite"),
        Grant("output/", "readwrite"),
        Grant("taken/", "readwrite"),
        Grant("replace/", "readwrite"),
        Grant("repairs/", "readwrite"),
    ),
}


async def create_roles(auth: object, prefix: str) -> None:
    """Create both roles on an etcd3aio auth service (``client.raw.auth``)."""
    from etcd3aio.auth import PermissionType  # type: ignore[import-not-found,unused-ignore]

    kinds = {"read": PermissionType.READ, "readwrite": PermissionType.READWRITE}
    for role, grants in ROLES.items():
        await auth.role_add(role)  # type: ignore[attr-defined]
        for g in grants:
            key, end = g.key_range(prefix)
            await auth.role_grant_permission(  # type: ignore[attr-defined]
                role, key, end, perm_type=kinds[g.access]
            )


def etcdctl_lines(prefix: str) -> list[str]:
    """The ``etcdctl role grant-permission`` arguments of every grant (the setup script)."""
    lines = []
    for role, grants in ROLES.items():
        for g in grants:
            key = f"{prefix}/{g.path}"
            flag = "--prefix=true " if g.is_dir else ""
            lines.append(f"{role} {flag}{g.access} {key}")
    return lines


if __name__ == "__main__":  # python -m scheduler.roles /cron: the grants, one per line
    for line in etcdctl_lines(sys.argv[1] if len(sys.argv) > 1 else "/cron"):
        print(line)

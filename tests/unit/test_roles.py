"""The etcd roles: scheduler/roles.py is the one source; the setup script grants the same."""

from __future__ import annotations

import re
from pathlib import Path

from scheduler.roles import MASTER_ROLE, ROLES, WORKER_ROLE, Grant

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/etcd/setup-auth.sh"


def _script_grants() -> set[tuple[str, str, str]]:
    """(role, access, path) of every grant the script makes, its loops unrolled."""
    text = SCRIPT.read_text()
    found: set[tuple[str, str, str]] = set()
    for loop in re.finditer(r"for d in ([a-z ]+); do\n\s+grant (\S+) (\S+) \"\$P/\$d/\"", text):
        for d in loop.group(1).split():
            found.add((loop.group(2), loop.group(3), f"{d}/"))
    for one in re.finditer(r"^grant (\S+) (\S+) \"\$P/([^\"$]*)\"", text, re.MULTILINE):
        found.add((one.group(1), one.group(2), one.group(3)))
    return found


def test_the_setup_script_grants_exactly_the_roles_of_the_code() -> None:
    expected = {(role, g.access, g.path) for role, grants in ROLES.items() for g in grants}
    assert _script_grants() == expected


def test_workers_cannot_write_what_only_masters_write() -> None:
    writable = {g.path for g in ROLES[WORKER_ROLE] if g.access == "readwrite"}
    for master_only in ("jobs/", "trigger/", "killer/", "budget", "masters/", "leader"):
        assert master_only not in writable
    assert ROLES[MASTER_ROLE] == (Grant("", "readwrite"),)


def test_key_ranges() -> None:
    assert Grant("jobs/", "read").key_range("/cron") == ("/cron/jobs/", "/cron/jobs0")
    assert Grant("budget", "read").key_range("/cron") == ("/cron/budget", None)
    assert Grant("", "readwrite").key_range("/cron") == ("/cron/", "/cron0")

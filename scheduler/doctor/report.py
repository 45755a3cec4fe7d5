"""The doctor's results: one :class:`Check` per line, and what they add up to.

Exit codes (``docs/cli.md``): 0 every check is OK; 1 a check is WARN or FAIL;
2 the configuration is invalid (nothing else is checked); 3 no etcd endpoint
answered (the cluster is unreachable; the checks that need it are not run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_INVALID_CONFIG = 2
EXIT_UNREACHABLE = 3


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    """What was checked: ``config``, ``endpoint 10.0.0.1:2379``, ``clock w1``..."""
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status.value:<4}  {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail}


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str) -> Check:
    return Check(name, Status.WARN, detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, Status.FAIL, detail)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    unreachable: bool = False
    """No etcd endpoint answered."""
    invalid_config: bool = False

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    @property
    def exit_code(self) -> int:
        if self.invalid_config:
            return EXIT_INVALID_CONFIG
        if self.unreachable:
            return EXIT_UNREACHABLE
        if any(c.status is not Status.OK for c in self.checks):
            return EXIT_PROBLEMS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        counts = {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}
        return {
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "counts": counts,
            "checks": [c.to_dict() for c in self.checks],
        }

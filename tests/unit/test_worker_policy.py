"""worker.policy: each rule, table-driven (workers/policy.py)."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.config import PolicyConfig
from scheduler.model import JobSpec
from workers.policy import check


def job(**kw: Any) -> JobSpec:
    if "shell" not in kw:
        kw.setdefault("command", ["/usr/bin/backup"])
    return JobSpec(name="j", schedule="@every 1m", **kw)


CASES: list[tuple[dict[str, Any], dict[str, Any], str | None, str | None]] = [
    # (policy, job fields, run-as user, expected rule or None)
    ({}, {}, None, None),
    ({"commands": ["/usr/bin/*"]}, {}, None, None),
    ({"commands": ["/usr/bin/*"]}, {"command": ["/usr/local/bin/x"]}, None, "policy.commands"),
    ({"commands": ["/usr/bin/*"]}, {"command": ["/usr/bin/sub/x"]}, None, "policy.commands"),
    ({"commands": ["/usr/bin/*"]}, {"command": ["/usr/bin/../sbin/x"]}, None, "policy.commands"),
    ({"commands": ["/usr/bin/*"]}, {"command": ["backup"]}, None, "policy.commands"),
    ({"commands": ["/usr/bin/*"]}, {"shell": "echo hi"}, None, "policy.commands"),
    ({"commands": ["/bin/sh"]}, {"shell": "echo hi"}, None, None),
    ({"users": ["svc-*"]}, {}, "svc-backup", None),
    ({"users": ["svc-*"]}, {}, "nobody", "policy.users"),
    ({}, {}, "root", "policy.users"),  # root only when asked for and listed
    ({"users": ["*"]}, {"user": "root"}, "root", "policy.users"),
    ({"users": ["root"]}, {"user": "root"}, "root", None),
    ({"max_timeout": "1h"}, {}, None, "policy.max_timeout"),
    ({"max_timeout": "1h"}, {"timeout": "2h"}, None, "policy.max_timeout"),
    ({"max_timeout": "1h"}, {"timeout": "30m"}, None, None),
    ({"max_output_limit": "1KiB"}, {}, None, "policy.max_output_limit"),  # worker default 1 MiB
    ({"max_output_limit": "1KiB"}, {"output_limit": "512"}, None, None),
    ({"env": ["LANG", "APP_*"]}, {"env": {"APP_MODE": "x", "LANG": "C"}}, None, None),
    ({"env": ["LANG", "APP_*"]}, {"env": {"LD_PRELOAD": "/tmp/x.so"}}, None, "policy.env"),
]


@pytest.mark.parametrize(("policy", "fields", "run_as", "rule"), CASES)
def test_policy_rules(
    policy: dict[str, Any], fields: dict[str, Any], run_as: str | None, rule: str | None
) -> None:
    got = check(job(**fields), PolicyConfig(**policy), run_as=run_as, output_limit=1024 * 1024)
    if rule is None:
        assert got is None
    else:
        assert got is not None and got.startswith(rule + ":"), got

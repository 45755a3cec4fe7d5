"""The CI selection of the chaos suite (``python -m tests.chaos --short``):
baseline, SIGKILL, SIGSTOP, etcd leader kill, a frozen etcd leader, a worker
clock an hour ahead (libfaketime) and stale or forged keys, each against its own
3-member etcd cluster and 3 worker processes. Every scenario waits on conditions with
timeouts; the only fixed durations are the faults themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.__main__ import SHORT, run_one, table
from tests.chaos.scenarios import Opts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_short_chaos_selection_passes(tmp_path: Path) -> None:
    results = []
    for n in SHORT:
        results.append(await run_one(n, Opts(tmp_path, short=True)))
    failed = {
        r.name: {"error": r.error, "rules": [k for k, ok in r.checks.items() if not ok]}
        for r in results
        if not r.passed
    }
    assert not failed, f"{failed}\n{table(results)}"

"""docs/operations.md names every metric family a worker or a master exports."""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.test_prometheus_rules import _exported

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _family(sample: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", sample)


def test_every_exported_metric_is_documented() -> None:
    text = DOC.read_text()
    families = {_family(s) for s in _exported()}
    assert "etcron_runs_total" in families and "etcron_run_start_lag_seconds" in families
    missing = sorted(f for f in families if f"`{f}`" not in text)
    assert not missing, f"docs/operations.md does not name: {missing}"

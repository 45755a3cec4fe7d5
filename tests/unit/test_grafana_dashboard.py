"""deploy/grafana/etcron.json: every panel's PromQL names only metrics etcron exports,
parses (promtool), groups cron jobs by ``exported_job``, and covers what operators watch."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_prometheus_rules import PROMTOOL, _exported, needs_promtool

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "etcron.json"

GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$cronjob": ".*",
    "$worker_job": "etcron-worker",
    "$master_job": "etcron-master",
}

MUST_SHOW = {
    "etcron_runs_total": "runs by status",
    "etcron_run_start_lag_seconds_bucket": "start lag",
    "etcron_run_duration_seconds_bucket": "durations",
    "etcron_ticks_missed_total": "missed ticks",
    "etcron_ticks_skipped_total": "skipped ticks",
    "etcron_claims_total": "claims",
    "etcron_etcd_request_duration_seconds_bucket": "etcd latency",
    "etcron_session_lease_remaining_seconds": "lease remaining",
    "etcron_clock_skew_seconds": "clock skew",
    "etcron_worker_capacity": "capacity",
    "etcron_runs_running": "capacity",
    "etcron_etcd_db_size_bytes": "db size",
    "etcron_etcd_quota_bytes": "quota",
}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in items:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))
    return out


def _exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    d = _dashboard()
    out = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in _panels(d["panels"])
        for t in p.get("targets", [])
    ]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            q = re.fullmatch(r"label_values\((\w+), *\w+\)", var["definition"])
            assert q, var["definition"]
            out.append((f"variable {var['name']}", q.group(1)))
    return out


def test_panels_name_only_exported_metrics() -> None:
    exported = _exported()
    used = {name for _, e in _exprs() for name in re.findall(r"\betcron_\w+", e)}
    missing = used - exported
    assert not missing, f"the dashboard names metrics nobody exports: {sorted(missing)}"
    absent = {m: why for m, why in MUST_SHOW.items() if m not in used}
    assert not absent, f"no panel shows: {absent}"


def test_cron_jobs_are_exported_job_and_scrape_jobs_are_variables() -> None:
    for where, expr in _exprs():
        # the cron job's name is `exported_job` in Prometheus: `job` is the scrape job
        for clause in re.findall(r"\b(?:by|without) *\(([^)]*)\)", expr):
            assert "job" not in {c.strip() for c in clause.split(",")}, (where, expr)
        for value in re.findall(r"(?<![\w])job *=~? *\"([^\"]*)\"", expr):
            assert value in ("$worker_job", "$master_job"), (where, expr)


def test_layout_is_well_formed() -> None:
    d = _dashboard()
    panels = _panels(d["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["title"] and {"x", "y", "w", "h"} <= set(p["gridPos"]), p
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "cronjob", "worker_job", "master_job"} <= names


@needs_promtool
def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool checks the PromQL of a rules file: one alert per expression."""
    rules = []
    for i, (where, expr) in enumerate(_exprs()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, (where, expr)
        rules.append({"alert": f"Panel{i}", "expr": expr, "annotations": {"where": where}})
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("bad", ["etcron_no_such_metric", "etcron_runs"])
def test_the_name_check_would_catch_a_typo(bad: str) -> None:
    assert bad not in _exported()

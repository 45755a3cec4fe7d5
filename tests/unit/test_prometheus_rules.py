"""deploy/prometheus/rules.yaml: valid for promtool, its unit tests pass, and every
metric it names is one etcron exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import cast

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Config, MasterConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.metrics import MasterMetrics
from scheduler.metrics import render
from workers.worker import Worker

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)


def _promtool(*args: str) -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    _promtool("check", "rules", "rules.yaml")


@needs_promtool
def test_promtool_test_rules() -> None:
    _promtool("test", "rules", "rules_test.yaml")


def _exported() -> set[str]:
    """Every sample name a worker and a master expose (histogram buckets included)."""
    worker = Worker(Config())
    worker.metrics.start_lag.observe(0.1)
    worker.metrics.duration.observe(1.0)
    worker.metrics.etcd.observe("txn", 0.01, True)
    worker.metrics.runs["a", "failed"] += 1
    worker.metrics.missed_ticks["a", "deadline"] += 1
    worker.metrics.skipped_ticks["a", "previous_running"] += 1
    config = MasterConfig()
    master = MasterMetrics(cast(EtcdClient, None), Keyspace("/cron"), config)
    master.db_size, master.jobs, master.nospace = 1, 1, False
    master.request_done("/v1/jobs", "GET", 200, 0.01)
    master.sweep_duration.observe(1.0)
    names: set[str] = set()
    for text in (worker.metrics.render(), render(master.registry)):
        for family in text_string_to_metric_families(text.decode()):
            names |= {s.name for s in family.samples}
    return names


def test_rules_name_only_exported_metrics() -> None:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"\betcron_\w+", e)}
    assert used, "no etcron metric in the rules"
    missing = used - _exported()
    assert not missing, f"rules name metrics nobody exports: {sorted(missing)}"

"""CLI start-up: ``etcron --help`` and ``etcron version`` load none of the heavy modules.

Measured in ``bench/cli_startup.py`` (docs/benchmarks.md); here the rule behind
the figures is checked, deterministically: which modules a call imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scheduler.cli.common import NAME_RE
from scheduler.model import NAME_RE as MODEL_NAME_RE

HEAVY = (
    "httpx", "rich", "yaml", "pydantic", "croniter", "etcd3aio", "grpc", "fastapi",
    "structlog", "asyncio", "scheduler.config", "scheduler.model", "scheduler.cli.client",
)  # fmt: skip

# Prints the heavy modules loaded by the time the interpreter exits.
PROBE = """
import atexit, json, sys
HEAVY = {heavy!r}
atexit.register(lambda: print(json.dumps(sorted(
    m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY)))))
{code}
"""


def loaded(code: str) -> set[str]:
    probe = PROBE.format(heavy=HEAVY, code=code)
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    last = proc.stdout.strip().splitlines()[-1]
    return {m.split(".")[0] if not m.startswith("scheduler") else m for m in json.loads(last)}


@pytest.fixture(scope="module")
def typer_own() -> set[str]:
    """What typer itself loads to run a command with an option (typer 0.29 loads
    pydantic for every option value; pyproject pins typer below it)."""
    code = (
        "import typer\napp = typer.Typer()\n"
        "@app.command()\ndef c(x: str = typer.Option('a')) -> None: pass\n"
        "@app.command()\ndef d() -> None: pass\n"
        "try:\n    app(['c', '--x', 'b'])\nexcept SystemExit:\n    pass\n"
    )
    return loaded(code)


@pytest.mark.parametrize("args", [["--help"], ["version"], ["--version"], ["get", "--help"]])
def test_help_and_version_load_no_heavy_module(args: list[str], typer_own: set[str]) -> None:
    code = f"from scheduler.cli.main import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass"
    assert loaded(code) - typer_own == set()


def test_the_heavy_modules_load_when_a_command_needs_them(typer_own: set[str]) -> None:
    # the probe sees them: an offline validate needs the job model and yaml
    code = (
        "from scheduler.cli.main import main\ntry:\n"
        "    main(['validate', '-f', '/nonexistent/jobs.yaml'])\nexcept SystemExit:\n    pass"
    )
    assert {"scheduler.model", "yaml"} <= loaded(code)


def test_the_cli_name_rule_is_the_models() -> None:
    assert NAME_RE.pattern == MODEL_NAME_RE.pattern

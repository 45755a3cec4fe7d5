"""Global options after the command (scheduler/cli/argv.py)."""

from __future__ import annotations

import typer

from scheduler.cli.argv import hoist
from scheduler.cli.main import app

ROOT = typer.main.get_command(app)


def test_global_options_after_the_command_move_before_it() -> None:
    args = ["get", "jobs", "-o", "json", "--server", "http://m:8070", "--token=t"]
    assert hoist(ROOT, args) == [
        "--server", "http://m:8070", "--token=t", "get", "jobs", "-o", "json",
    ]  # fmt: skip
    assert hoist(ROOT, ["--config", "c.yaml", "history", "x", "--token", "t"]) == [
        "--config", "c.yaml", "--token", "t", "history", "x",
    ]  # fmt: skip


def test_values_of_the_commands_own_options_and_args_after_dashdash_stay() -> None:
    assert hoist(ROOT, ["validate", "-f", "--server"]) == ["validate", "-f", "--server"]
    assert hoist(ROOT, ["logs", "x", "--since", "1h", "--", "--token"]) == [
        "logs", "x", "--since", "1h", "--", "--token",
    ]  # fmt: skip


def test_a_command_with_its_own_config_option_keeps_it() -> None:
    assert hoist(ROOT, ["worker", "--config", "w.yaml"]) == ["worker", "--config", "w.yaml"]
    assert hoist(ROOT, ["nope", "--server", "u"]) == ["nope", "--server", "u"]

"""``etcron run`` and ``etcron kill``."""

from __future__ import annotations

import typer

from scheduler.cli.common import NameArg, globals_of, job_name


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(kill)


def run(ctx: typer.Context, name: NameArg) -> None:
    """Ask for one run now (the request expires after 60 s)."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.run(job_name(name))
    render.say(f"run requested: {name} (request {data['request_id']})")


def kill(ctx: typer.Context, name: NameArg) -> None:
    """Ask the workers to stop every running run of a job."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        answer = api.kill(job_name(name))
    render.say(f"kill requested: {name}")
    ended = answer.get("ended") if isinstance(answer, dict) else None
    for run_id in ended or []:
        render.say(f"ended (its worker is gone): {run_id}")

"""Commands on jobs: apply, diff, get, delete, suspend, resume, history, workers.

Heavy modules (the client, rich, yaml, the job model) are imported inside the
commands (see :mod:`scheduler.cli.common`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import (
    FileOpt,
    Format,
    NameArg,
    OutputOpt,
    globals_of,
    job_name,
)
from scheduler.cli.errors import EXIT_INVALID, EXIT_OTHER, CliError, InvalidInput

if TYPE_CHECKING:
    from scheduler.model import JobSpec


def load_jobs(path: Path) -> list[JobSpec]:
    """The jobs of a file, or invalid input listing every problem (exit 2)."""
    from scheduler.jobfile import JobFileError, load_jobs

    try:
        return load_jobs(path)
    except JobFileError as exc:
        n = len(exc.problems)
        lines = "\n".join(f"  {p}" for p in exc.problems)
        raise InvalidInput(f"{n} problem{'s' if n != 1 else ''} in {path}:\n{lines}") from exc


def _wire(spec: JobSpec) -> dict[str, Any]:
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    data["name"] = spec.name
    return data


def register(app: typer.Typer, get_app: typer.Typer, delete_app: typer.Typer) -> None:
    app.command()(apply)
    app.command()(diff)
    get_app.command("jobs")(get_jobs)
    get_app.command("job")(get_job)
    delete_app.command("job")(delete_job)
    app.command()(suspend)
    app.command()(resume)
    app.command()(history)
    app.command()(workers)


def apply(
    ctx: typer.Context,
    file: FileOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show the plan, write nothing")
    ] = False,
    prune: Annotated[bool, typer.Option("--prune", help="delete jobs not in the file")] = False,
) -> None:
    """Create and update the jobs of a file (validated locally first).

    If any job of the file is invalid, every problem is printed and nothing is
    sent (exit 2). Writes are guarded by the revisions the plan saw: a
    concurrent edit is a conflict (exit 1), never overwritten.

    \b
    Examples:
      etcron apply -f jobs.yaml --dry-run   # the plan; nothing is written
      etcron apply -f jobs.yaml             # create and update
      etcron apply -f jobs.yaml --prune     # and delete jobs not in the file
    """
    from scheduler.cli import render

    jobs = load_jobs(file)
    with globals_of(ctx).client() as api:
        plan = api.apply([_wire(j) for j in jobs], prune=prune, dry_run=dry_run)
    render.plan_lines(plan)


def diff(
    ctx: typer.Context,
    file: FileOpt,
    prune: Annotated[bool, typer.Option("--prune", help="also show deletions")] = False,
) -> None:
    """What `apply` would change, field by field. Writes nothing.

    Exit 0: no changes; 1: changes; 2: invalid input (or another error);
    3: master unreachable or refusing (as `kubectl diff`).
    """
    try:
        changes = _diff(ctx, file, prune)
    except CliError as exc:
        if exc.exit_code == EXIT_OTHER:
            exc.exit_code = EXIT_INVALID  # 1 means "changes" here
        raise
    if changes:
        raise typer.Exit(1)


def _diff(ctx: typer.Context, file: Path, prune: bool) -> bool:
    """Print the plan with the changed fields; True if anything would change."""
    from scheduler.cli import render

    jobs = {j.name: j for j in load_jobs(file)}
    details: dict[str, list[str]] = {}
    with globals_of(ctx).client() as api:
        plan = api.apply([_wire(j) for j in jobs.values()], prune=prune, dry_run=True)
        for name in plan.get("update", []):
            old = render.compact_spec(api.get_job(name)["spec"])
            new = render.compact_spec(jobs[name].model_dump(mode="json"))
            details[name] = [
                f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
                for key in sorted(old.keys() | new.keys())
                if old.get(key) != new.get(key)
            ]
    render.plan_lines(plan, details)
    return any(plan.get(action) for action in ("create", "update", "delete"))


def get_jobs(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """List jobs (whole values in a pipe; -o wide for more columns)."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.list_jobs()
    if output.tabular:
        render.jobs_table(data["jobs"], data.get("invalid", []), wide=output is Format.WIDE)
    else:
        jobs = [render.compact_spec(j) for j in data["jobs"]]
        render.emit({"jobs": jobs}, output)


def get_job(ctx: typer.Context, name: NameArg, output: OutputOpt = Format.TABLE) -> None:
    """Show one job, every field in full."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.get_job(job_name(name))
    if output.tabular:
        render.job_detail(data["spec"], data.get("mod_revision"))
    else:
        render.emit(render.compact_spec(data["spec"]), output)


def delete_job(ctx: typer.Context, name: NameArg) -> None:
    """Delete one job (its run history stays until housekeeping removes it)."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        api.delete_job(job_name(name))
    render.say(f"deleted {name}")


def suspend(ctx: typer.Context, name: NameArg) -> None:
    """Stop scheduling a job (running runs continue)."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        api.suspend(job_name(name))
    render.say(f"suspended {name}")


def resume(ctx: typer.Context, name: NameArg) -> None:
    """Schedule a suspended job again."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        api.resume(job_name(name))
    render.say(f"resumed {name}")


def history(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=1000, help="how many")] = 20,
    output: OutputOpt = Format.TABLE,
) -> None:
    """The newest runs of a job: status, worker, exit code, token.

    \b
    Examples:
      etcron history backup -n 5
      etcron history backup | grep failed   # a pipe gets whole values
      etcron history backup -o wide         # and start, end, attempt, message
    """
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.runs(job_name(name), limit)
    if output.tabular:
        render.runs_table(data["runs"], wide=output is Format.WIDE)
    else:
        render.emit(data, output)


def workers(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """Live workers: labels, capacity, running runs, clock skew."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.workers()
    if output.tabular:
        render.workers_table(data["workers"], wide=output is Format.WIDE)
    else:
        render.emit(data, output)

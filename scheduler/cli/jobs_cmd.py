"""Commands on jobs: apply, diff, get, delete, suspend, resume, history, workers.

Heavy modules (the client, rich, yaml, the job model) are imported inside the
commands (see :mod:`scheduler.cli.common`).
"""

from __future__ import annotations

from collections.abc import Collection
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
from scheduler.cli.errors import EXIT_INVALID, EXIT_OTHER, CliError, InvalidInput, NotFound

if TYPE_CHECKING:
    from scheduler.cli.client import ApiClient
    from scheduler.cli.status import JobState
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


def _wire(spec: JobSpec, suspended: Collection[str] = ()) -> dict[str, Any]:
    """The spec to send. ``suspend`` is the file's only when the file sets it:
    otherwise a job in ``suspended`` (suspended on the server) stays suspended."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    data["name"] = spec.name
    if "suspend" not in spec.model_fields_set and spec.name in suspended:
        data["suspend"] = True
    return data


def _suspended(api: ApiClient) -> set[str]:
    """The jobs suspended on the server now (``suspend`` is kept unless the file sets it)."""
    return {j["name"] for j in api.list_jobs()["jobs"] if j.get("suspend")}


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
        suspended = _suspended(api)
        plan = api.apply([_wire(j, suspended) for j in jobs], prune=prune, dry_run=dry_run)
        render.plan_lines(plan)
        if any(j.selector for j in jobs):
            try:
                live = api.workers()["workers"]
            except CliError:
                return  # advice only: the apply itself is done
            _warn_ineligible([_wire(j, suspended) for j in jobs], live)


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
        suspended = _suspended(api)
        wire = {name: _wire(j, suspended) for name, j in jobs.items()}
        plan = api.apply(list(wire.values()), prune=prune, dry_run=True)
        for name in plan.get("update", []):
            old = render.compact_spec(api.get_job(name)["spec"])
            new = render.compact_spec(wire[name])
            details[name] = [
                f"{key}: {render.yamlish(old.get(key))} -> {render.yamlish(new.get(key))}"
                for key in sorted(old.keys() | new.keys())
                if old.get(key) != new.get(key)
            ]
    render.plan_lines(plan, details)
    return any(plan.get(action) for action in ("create", "update", "delete"))


def get_jobs(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """List jobs: ACTIVE, LAST RUN and NEXT RUN too (-o wide: more columns).

    A job whose selector matches no live worker gets a warning on stderr.
    -o json / yaml print the specs only (they apply again).
    """
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.list_jobs()
        if not output.tabular:
            render.emit({"jobs": [render.compact_spec(j) for j in data["jobs"]]}, output)
            return
        live, runs = _workers_and_runs(api, [j["name"] for j in data["jobs"]])
    wide = output is Format.WIDE
    state = _job_states(data["jobs"], runs, wide=wide)
    render.jobs_table(data["jobs"], data.get("invalid", []), wide=wide, state=state)
    _warn_ineligible(data["jobs"], live)


HISTORY_FOR_STATE = 10
"""Run records read per job for ACTIVE and LAST RUN (the newest ones)."""


def _workers_and_runs(
    api: ApiClient, names: list[str]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The live workers and each job's newest runs: one request each, 8 at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def runs_of(name: str) -> list[dict[str, Any]]:
        try:
            return list(api.runs(name, HISTORY_FOR_STATE)["runs"])
        except NotFound:
            return []  # deleted since the listing

    with ThreadPoolExecutor(max_workers=8) as pool:
        live = pool.submit(api.workers)
        runs = dict(zip(names, pool.map(runs_of, names), strict=True))
        return list(live.result()["workers"]), runs


def _job_states(
    jobs: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]], *, wide: bool
) -> dict[str, JobState]:
    from datetime import UTC, datetime

    from scheduler.cli import status
    from scheduler.schedule import Schedule, validate_timezone

    now = datetime.now(UTC)
    out = {}
    for j in jobs:
        next_at = None
        if not j.get("suspend"):
            try:
                zone = validate_timezone(j.get("timezone", "UTC"))
                times = Schedule.parse(j["schedule"]).preview(now, zone, 1)
                next_at = times[0] if times else None
            except ValueError:
                next_at = None
        out[j["name"]] = status.job_state(runs.get(j["name"], []), next_at, now, wide=wide)
    return out


def _warn_ineligible(jobs: list[dict[str, Any]], live: list[dict[str, Any]]) -> None:
    """A warning on stderr for each job with a selector that no live worker matches."""
    from scheduler.cli import render, status

    for j in jobs:
        selector = j.get("selector") or {}
        if selector and not status.eligible(selector, live):
            render.warn(
                f"warning: job {j['name']}: {status.NO_ELIGIBLE}: its selector "
                f"({status.selector_text(selector)}) matches no live worker's labels; "
                "its ticks are recorded missed"
            )


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

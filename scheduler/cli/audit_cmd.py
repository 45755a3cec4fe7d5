"""``etcron audit`` and ``etcron rollout history|diff|undo``: who changed what, and going back.

- ``audit [--job NAME] [--since 1h] [--limit N]``: the changes newest first
  (time, token name, client address, operation, jobs, what changed); follows the
  master's ``next`` cursor until ``--limit`` entries (at most
  :data:`MAX_PAGES` requests).
- ``rollout history JOB``: the versions kept, with who and when.
- ``rollout diff JOB V1 V2``: a unified diff of the two versions' YAML; exit 0
  when equal, 1 when they differ, 2 or 3 on an error (as ``etcron diff``).
- ``rollout undo JOB [--to V]``: reads the job's mod revision, then asks for the
  rollback with ``If-Match`` on it (``--if-match`` to give the one you saw): a
  change made meanwhile is a conflict (exit 1), nothing restored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import Format, NameArg, OutputOpt, globals_of, job_name
from scheduler.cli.errors import EXIT_INVALID, EXIT_OTHER, CliError, Conflict, NotFound

if TYPE_CHECKING:
    from scheduler.cli.client import ApiClient

MAX_PAGES = 20

rollout_app = typer.Typer(
    help="Definition history of a job: history, diff, undo.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
VersionArg = Annotated[int, typer.Argument(min=1, metavar="V", help="a version number")]


def register(app: typer.Typer) -> None:
    app.command()(audit)
    app.add_typer(rollout_app, name="rollout")
    rollout_app.command("history")(history)
    rollout_app.command("diff")(diff)
    rollout_app.command("undo")(undo)


def audit(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option("--job", help="only changes of this job")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="a duration back (1h, 7d) or an ISO time")
    ] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=10_000, help="how many")] = 50,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Changes newest first: when, who (token name), from where, what.

    \b
    Examples:
      etcron audit --since 1h
      etcron audit --job backup -o json
    """
    from scheduler.cli import render

    params: dict[str, Any] = {"limit": min(limit, 1000)}
    if job is not None:
        params["job"] = job_name(job)
    if since is not None:
        params["since"] = since
    entries: list[dict[str, Any]] = []
    with globals_of(ctx).client() as api:
        for _ in range(MAX_PAGES):
            page = api.audit(params)
            entries += page["entries"]
            if not page.get("next") or len(entries) >= limit:
                break
            params["before"] = page["next"]
            params["limit"] = min(limit - len(entries), 1000)
    entries = entries[:limit]
    if not output.tabular:
        render.emit({"entries": entries}, output)
        return
    rows = [
        [
            render.when(e.get("at")),
            str(e.get("who", "?")),
            str(e.get("address") or "-"),
            str(e.get("operation", "?")),
            ",".join(e.get("jobs") or []) or "-",
            _what(e),
        ]
        for e in entries
    ]
    headers = ["TIME", "WHO", "ADDRESS", "OPERATION", "JOBS", "CHANGES"]
    render.print_table(headers, rows, wide=output is Format.WIDE, keep=("TIME", "OPERATION"))


def _what(entry: dict[str, Any]) -> str:
    parts = []
    for d in entry.get("changes") or []:
        fields = ",".join(d.get("fields") or [])
        version = f" v{d['version']}" if d.get("version") else ""
        parts.append(
            f"{d.get('job')}: {d.get('change')}{version}" + (f" {fields}" if fields else "")
        )
    if entry.get("detail"):
        parts.append(str(entry["detail"]))
    return "; ".join(parts) or "-"


def history(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=1000, help="how many")] = 20,
    output: OutputOpt = Format.TABLE,
) -> None:
    """The versions of a job's definition, newest first: who and when."""
    from scheduler.cli import render

    with globals_of(ctx).client() as api:
        data = api.versions(job_name(name), limit)
    if not output.tabular:
        render.emit(data, output)
        return
    rows = [
        [
            str(v["version"]),
            render.when(v.get("at")),
            str(v.get("who", "?")),
            str(v.get("address") or "-"),
            str(v.get("operation", "?")),
            str(v.get("change", "?")),
            str(v.get("spec_hash") or "-"),
            str(v["restored"]) if v.get("restored") else "-",
        ]
        for v in data["versions"]
    ]
    headers = ["VERSION", "WHEN", "WHO", "ADDRESS", "OPERATION", "CHANGE", "SPEC", "RESTORED"]
    render.print_table(headers, rows, wide=output is Format.WIDE, keep=("VERSION", "WHO"))


def diff(ctx: typer.Context, name: NameArg, v1: VersionArg, v2: VersionArg) -> None:
    """A unified diff of two versions' YAML. Exit 0: equal; 1: they differ; 2, 3: an error."""
    import difflib

    from scheduler.cli import render

    name = job_name(name)
    try:
        with globals_of(ctx).client() as api:
            a, b = api.version(name, v1), api.version(name, v2)
    except CliError as exc:
        if exc.exit_code == EXIT_OTHER:
            exc.exit_code = EXIT_INVALID  # 1 means "they differ" here
        raise
    lines = list(
        difflib.unified_diff(
            _yaml(a).splitlines(keepends=True),
            _yaml(b).splitlines(keepends=True),
            fromfile=f"{name} version {v1}",
            tofile=f"{name} version {v2}",
        )
    )
    if not lines:
        render.say(f"versions {v1} and {v2} of {name} are the same")
        return
    render.say("".join(lines).rstrip("\n"))
    raise typer.Exit(1)


def _yaml(version: dict[str, Any]) -> str:
    import yaml

    from scheduler.cli import render

    spec = version.get("spec")
    if spec is None:
        return "# (deleted)\n"
    return str(yaml.safe_dump(render.compact_spec(spec), sort_keys=False, allow_unicode=True))


def undo(
    ctx: typer.Context,
    name: NameArg,
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="the version [default: the previous one]")
    ] = None,
    if_match: Annotated[
        int | None,
        typer.Option("--if-match", min=0, help="only if the job is at this mod revision"),
    ] = None,
) -> None:
    """Restore an earlier version of a job (also of a deleted one).

    Compare-and-swap on the job's mod revision: if the job changes meanwhile,
    nothing is restored (exit 1).

    \b
    Examples:
      etcron rollout undo backup            # the version before the current spec
      etcron rollout undo backup --to 3
    """
    from scheduler.cli import render

    name = job_name(name)
    with globals_of(ctx).client() as api:
        expect = if_match if if_match is not None else _mod_revision(api, name)
        try:
            done = api.rollback(name, to, expect)
        except Conflict as exc:
            raise Conflict(
                f"job {name} was changed by someone else: {exc}. "
                f"See `etcron rollout history {name}` and try again.",
                exc.problems,
            ) from exc
    if done["changed"]:
        render.say(
            f"restored version {done['restored']} of {name} (mod revision {done['mod_revision']})"
        )
    else:
        render.say(f"{name} already matches version {done['restored']}; nothing changed")


def _mod_revision(api: ApiClient, name: str) -> int:
    """The job's mod revision now; 0 when it does not exist (undo after delete)."""
    try:
        return int(api.get_job(name)["mod_revision"])
    except NotFound:
        return 0

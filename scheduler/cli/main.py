"""``etcron``: the command line. Talks to a master over HTTP; some commands are offline.

Rules:

- Input is validated locally before anything is sent: ``apply`` with any invalid
  job prints every problem (file, line, job, field) and exits 2, sending nothing.
- Exit codes: 0 ok, 1 other failure (unknown job, conflict), 2 invalid input or
  usage, 3 master unreachable or refusing (connection error, 401/403, 503).
  ``diff`` exits 1 when there are changes (an error there is 2 or 3, never 1).
- Help is plain text (``-h`` or ``--help``); commands are listed in the order
  of :data:`ORDER`; global options may also follow the command
  (:mod:`scheduler.cli.argv`).
- Only this module installs SIGINT/SIGTERM handlers (``etcron master``: the
  first signal stops gracefully, a second one cancels at once).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from scheduler import __version__
from scheduler.cli import argv, logs_cmd, render
from scheduler.cli.client import EXIT_INVALID, EXIT_OTHER, CliError, InvalidInput
from scheduler.cli.render import Format
from scheduler.cli.target import DEFAULT_SERVER, Globals, read_config
from scheduler.config import Config
from scheduler.model import NAME_RE, JobSpec

EXIT_CODES = (
    "Exit codes: 0 ok; 1 other failure (unknown job, conflict); "
    "2 invalid input or usage (nothing was sent); "
    "3 master unreachable or refusing (connection error, 401/403, 503)."
)

HELP = """etcron: a distributed cron scheduler on etcd.

\b
Examples:
  etcron validate -f jobs.yaml           # offline: every problem, file and line
  etcron apply -f jobs.yaml --dry-run    # the plan; nothing is written
  etcron get jobs --server http://master:8070
  etcron logs backup -f                  # follow the latest run of job backup
"""

ORDER = (
    "validate", "apply", "diff", "get", "next", "run", "kill", "history", "logs", "workers",
    "suspend", "resume", "delete", "master", "worker", "version",
)  # fmt: skip


class OrderedGroup(TyperGroup):
    """Lists the commands in the order people need them (:data:`ORDER`), not A-Z."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = list(self.commands)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


_SETTINGS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="etcron",
    cls=OrderedGroup,
    help=HELP,
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no box drawing, no <bool> after a flag
    context_settings=_SETTINGS,
)
get_app = typer.Typer(
    help="Show jobs (get jobs, get job NAME).", no_args_is_help=True, rich_markup_mode=None
)
delete_app = typer.Typer(
    help="Delete a job (delete job NAME).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(get_app, name="get")
app.add_typer(delete_app, name="delete")

OutputOpt = Annotated[
    Format,
    typer.Option("-o", "--output", help="table, wide (whole values, more columns), json or yaml"),
]
FileOpt = Annotated[Path, typer.Option("-f", "--file", help="a jobs YAML file")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", envvar="ETCRON_CONFIG", help="config file (YAML)")
]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="the job's name", show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        render.out.print(f"etcron {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _globals(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            envvar="ETCRON_SERVER",
            help=f"master URL [default: the config's master.listen, else {DEFAULT_SERVER}]",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ETCRON_TOKEN",
            help="API token [default: the config's master.token_file / master.token]",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    ctx.obj = Globals(server, token, config)


def _g(ctx: typer.Context) -> Globals:
    obj = ctx.find_object(Globals)
    assert obj is not None
    return obj


def _name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"{name!r} is not a valid job name (1-63 lowercase letters, digits and '-')"
        )
    return name


def _load_jobs(path: Path) -> list[JobSpec]:
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


# offline --------------------------------------------------------------------------


@app.command()
def validate(file: FileOpt) -> None:
    """Check a jobs file offline: YAML, fields, schedules, time zones."""
    jobs = _load_jobs(file)
    render.out.print(f"{len(jobs)} jobs OK", markup=False)


@app.command("next")
def next_(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(metavar="NAME", help="a job on the server", show_default=False)
    ] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="a schedule, offline")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone")] = "UTC",
    count: Annotated[int, typer.Option("-n", min=1, max=1000, help="how many")] = 5,
) -> None:
    """The next fire times of a job, or of --schedule (offline).

    \b
    Examples:
      etcron next backup -n 3
      etcron next --schedule '0 3 * * 1-5' --tz Europe/Berlin
    """
    from scheduler.schedule import Schedule, validate_timezone

    if (job is None) == (schedule is None):
        raise InvalidInput("give either a JOB name or --schedule EXPR")
    if job is not None:
        with _g(ctx).client() as api:
            spec = api.get_job(_name(job))["spec"]
        schedule, tz = spec["schedule"], spec.get("timezone", "UTC")
    assert schedule is not None
    try:
        zone = validate_timezone(tz)
        times = Schedule.parse(schedule).preview(datetime.now(UTC), zone, count)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    for t in times:
        local = t.astimezone(zone)
        render.out.print(f"{t.isoformat()}  ({local.isoformat()} {tz})", markup=False)


@app.command()
def version() -> None:
    """Print the version."""
    render.out.print(f"etcron {__version__}", markup=False)


# jobs -------------------------------------------------------------------------------


@app.command()
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
    jobs = _load_jobs(file)
    with _g(ctx).client() as api:
        plan = api.apply([_wire(j) for j in jobs], prune=prune, dry_run=dry_run)
    render.plan_lines(plan)


@app.command()
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
    jobs = {j.name: j for j in _load_jobs(file)}
    details: dict[str, list[str]] = {}
    with _g(ctx).client() as api:
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


@get_app.command("jobs")
def get_jobs(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """List jobs (whole values in a pipe; -o wide for more columns)."""
    with _g(ctx).client() as api:
        data = api.list_jobs()
    if output.tabular:
        render.jobs_table(data["jobs"], data.get("invalid", []), wide=output is Format.WIDE)
    else:
        jobs = [render.compact_spec(j) for j in data["jobs"]]
        render.emit({"jobs": jobs}, output)


@get_app.command("job")
def get_job(ctx: typer.Context, name: NameArg, output: OutputOpt = Format.TABLE) -> None:
    """Show one job, every field in full."""
    with _g(ctx).client() as api:
        data = api.get_job(_name(name))
    if output.tabular:
        render.job_detail(data["spec"], data.get("mod_revision"))
    else:
        render.emit(render.compact_spec(data["spec"]), output)


@delete_app.command("job")
def delete_job(ctx: typer.Context, name: NameArg) -> None:
    """Delete one job (its run history stays until housekeeping removes it)."""
    with _g(ctx).client() as api:
        api.delete_job(_name(name))
    render.out.print(f"deleted {name}", markup=False)


@app.command()
def suspend(ctx: typer.Context, name: NameArg) -> None:
    """Stop scheduling a job (running runs continue)."""
    with _g(ctx).client() as api:
        api.suspend(_name(name))
    render.out.print(f"suspended {name}", markup=False)


@app.command()
def resume(ctx: typer.Context, name: NameArg) -> None:
    """Schedule a suspended job again."""
    with _g(ctx).client() as api:
        api.resume(_name(name))
    render.out.print(f"resumed {name}", markup=False)


@app.command()
def run(ctx: typer.Context, name: NameArg) -> None:
    """Ask for one run now (the request expires after 60 s)."""
    with _g(ctx).client() as api:
        data = api.run(_name(name))
    render.out.print(f"run requested: {name} (request {data['request_id']})", markup=False)


@app.command()
def kill(ctx: typer.Context, name: NameArg) -> None:
    """Ask the workers to stop every running run of a job."""
    with _g(ctx).client() as api:
        answer = api.kill(_name(name))
    render.out.print(f"kill requested: {name}", markup=False)
    ended = answer.get("ended") if isinstance(answer, dict) else None
    for run_id in ended or []:
        render.out.print(f"ended (its worker is gone): {run_id}", markup=False)


@app.command()
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
    with _g(ctx).client() as api:
        data = api.runs(_name(name), limit)
    if output.tabular:
        render.runs_table(data["runs"], wide=output is Format.WIDE)
    else:
        render.emit(data, output)


@app.command()
def workers(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """Live workers: labels, capacity, running runs, clock skew."""
    with _g(ctx).client() as api:
        data = api.workers()
    if output.tabular:
        render.workers_table(data["workers"], wide=output is Format.WIDE)
    else:
        render.emit(data, output)


logs_cmd.register(app, lambda ctx: _g(ctx).client())


# daemons ------------------------------------------------------------------------------


@app.command()
def master(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Run a master: the HTTP API and housekeeping. SIGTERM/SIGINT stop it gracefully.

    Exit 2: invalid configuration (no token, busy port, unreadable file);
    3: etcd refused the credentials.
    """
    import structlog

    from scheduler import fatal
    from scheduler.logconfig import configure_logging

    cfg = read_config(config or _g(ctx).config)
    configure_logging("master", cfg.log.level, cfg.log.format)
    try:
        asyncio.run(_serve_master(cfg))
    except Exception as exc:
        raise typer.Exit(
            fatal.report(exc, structlog.get_logger("etcron.master"), "master")
        ) from exc


async def _serve_master(cfg: Config) -> None:
    from scheduler.master.server import leader_housekeeping, run_master

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await run_master(cfg, stop=stop, housekeeping=leader_housekeeping)
    except asyncio.CancelledError:
        if signals < 2:
            raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@app.command()
def worker(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Run a worker until SIGTERM (it drains running jobs first).

    Exit 2: invalid configuration (worker.id held by a live worker, unreadable
    TLS or password file); 3: etcd refused the credentials; 1: anything else.
    """
    from scheduler.logconfig import configure_logging

    cfg = read_config(config or _g(ctx).config)
    configure_logging("worker", cfg.log.level, cfg.log.format)
    import workers.daemon

    raise typer.Exit(workers.daemon.main(cfg))


# entry point ----------------------------------------------------------------------------


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and maps every failure to an exit code."""
    code = 0
    command = typer.main.get_command(app)
    args = argv.hoist(command, sys.argv[1:] if args is None else args)
    try:
        # standalone mode: usage errors print the usage and exit 2, --help exits 0
        command.main(args=args, prog_name="etcron", standalone_mode=True)
    except CliError as exc:
        render.err.print(f"error: {exc}", markup=False)
        render.problems(exc.problems)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()

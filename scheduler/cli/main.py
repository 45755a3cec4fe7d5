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
- Start-up: commands live in ``*_cmd`` modules that import heavy modules only
  inside the commands (:mod:`scheduler.cli.common`).
- Only :mod:`scheduler.cli.daemons_cmd` installs SIGINT/SIGTERM handlers
  (``etcron master``: the first signal stops gracefully, a second one cancels
  at once).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from scheduler import __version__
from scheduler.cli import (
    argv,
    audit_cmd,
    daemons_cmd,
    doctor_cmd,
    jobs_cmd,
    keys_cmd,
    logs_cmd,
    notify_cmd,
    run_cmd,
    token_cmd,
)
from scheduler.cli.common import ConfigOpt, FileOpt, globals_of, job_name
from scheduler.cli.errors import CliError, InvalidInput
from scheduler.cli.target import DEFAULT_SERVER, Globals

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
    "suspend", "resume", "delete", "audit", "rollout", "notifications", "doctor", "keygen",
    "token", "master", "worker", "completion", "version",
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


def _print_version(value: bool) -> None:
    if value:
        _say_version()
        raise typer.Exit()


def _say_version() -> None:
    sys.stdout.write(f"etcron {__version__}\n")  # plain: no console needed for one line
    sys.stdout.flush()


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
    cacert: Annotated[
        Path | None,
        typer.Option(
            "--cacert",
            envvar="ETCRON_CACERT",
            help="CA certificate(s) to trust for an https master [default: the config's "
            "cli.ca_file, else the system's CAs]",
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
    ctx.obj = Globals(server, token, config, cacert)


# offline --------------------------------------------------------------------------


@app.command()
def validate(file: FileOpt) -> None:
    """Check a jobs file offline: YAML, fields, schedules, time zones."""
    from scheduler.cli import render

    jobs = jobs_cmd.load_jobs(file)
    render.say(f"{len(jobs)} jobs OK")


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
    from scheduler.cli import render
    from scheduler.schedule import Schedule, validate_timezone

    if (job is None) == (schedule is None):
        raise InvalidInput("give either a JOB name or --schedule EXPR")
    if job is not None:
        with globals_of(ctx).client() as api:
            spec = api.get_job(job_name(job))["spec"]
        schedule, tz = spec["schedule"], spec.get("timezone", "UTC")
    assert schedule is not None
    try:
        zone = validate_timezone(tz)
        times = Schedule.parse(schedule).preview(datetime.now(UTC), zone, count)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    for t in times:
        local = t.astimezone(zone)
        render.say(f"{t.isoformat()}  ({local.isoformat()} {tz})")


COMPLETE_VAR = "_ETCRON_COMPLETE"
"""The environment variable the completion scripts set when they ask for completions."""
SHELLS = ("bash", "zsh")


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash or zsh", show_default=False)],
) -> None:
    """Print the shell completion script for bash or zsh.

    \b
    Examples:
      source <(etcron completion bash)                  # this shell only
      etcron completion bash > /etc/bash_completion.d/etcron
      etcron completion zsh > "${fpath[1]}/_etcron"      # then restart zsh
    """
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise InvalidInput(f"unknown shell {shell!r}: give one of {', '.join(SHELLS)}")
    script = get_completion_script(prog_name="etcron", complete_var=COMPLETE_VAR, shell=shell)
    sys.stdout.write(script.strip("\n") + "\n")


@app.command()
def version() -> None:
    """Print the version."""
    _say_version()


jobs_cmd.register(app, get_app, delete_app)
run_cmd.register(app)
audit_cmd.register(app)
notify_cmd.register(app)
logs_cmd.register(app, lambda ctx: globals_of(ctx).client())


doctor_cmd.register(app)
daemons_cmd.register(app)
keys_cmd.register(app)
token_cmd.register(app)


# entry point ----------------------------------------------------------------------------


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and maps every failure to an exit code."""
    code = 0
    command = typer.main.get_command(app)
    if os.environ.get(COMPLETE_VAR):
        # a completion script asks (etcron completion SHELL): click answers and exits
        from typer._completion_classes import completion_init

        completion_init()
    else:
        args = argv.hoist(command, sys.argv[1:] if args is None else args)
    try:
        # standalone mode: usage errors print the usage and exit 2, --help exits 0
        command.main(args=args, prog_name="etcron", standalone_mode=True)
    except CliError as exc:
        from scheduler.cli import render

        render.warn(f"error: {exc}")
        render.problems(exc.problems)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()

"""``etcron doctor``: check the cluster, straight against etcd (``scheduler.doctor``).

It reads the config as the daemons do (``--config``, ``ETCRON_CONFIG``,
``ETCRON_<SECTION>__<FIELD>``) and talks to etcd with its ``etcd`` section,
not to a master: it must work when every master is down.
"""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.cli.common import ConfigOpt, globals_of

FORMATS = ("text", "json")


def register(app: typer.Typer) -> None:
    app.command()(doctor)


def doctor(
    ctx: typer.Context,
    config: ConfigOpt = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="text (one line per check) or json")
    ] = "text",
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=120, help="seconds one check may take")
    ] = 5.0,
    max_time: Annotated[
        float, typer.Option("--max-time", min=1, max=600, help="seconds the whole run may take")
    ] = 60.0,
) -> None:
    """Check the config, every etcd endpoint, worker clocks, versions, locks and jobs.

    Talks to etcd directly with the config's etcd section (works with every
    master down). Prints one line per check: OK, WARN or FAIL and what it saw.

    \b
    Examples:
      etcron doctor --config /etc/etcron/config.yaml
      etcron doctor -o json | jq '.checks[] | select(.status != "OK")'

    \b
    Exit codes: 0 every check OK; 1 a check is WARN or FAIL;
    2 invalid configuration; 3 no etcd endpoint answered a read.
    """
    import asyncio

    from scheduler.cli import render
    from scheduler.cli.errors import InvalidInput
    from scheduler.config import ConfigError, load_config
    from scheduler.doctor.report import Report, fail
    from scheduler.doctor.run import run_doctor

    if output not in FORMATS:
        raise InvalidInput(f"-o must be one of {', '.join(FORMATS)}, got {output!r}")
    path = config or globals_of(ctx).config
    source = str(path) if path is not None else "defaults and environment"
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        report = Report(invalid_config=True)
        report.add(fail("config", str(exc).replace("\n", "; ")))
    else:
        from scheduler.logconfig import configure_logging

        # the checks are the output; the etcd client's own warnings go to stderr, and
        # only errors, so that a dead endpoint is one FAIL line and not a log storm
        configure_logging("doctor", "error", cfg.log.format)
        report = asyncio.run(run_doctor(cfg, source=source, timeout=timeout, bound=max_time))
    if output == "json":
        render.emit(report.to_dict(), "json")
    else:
        for check in report.checks:
            render.say(check.line())
    raise typer.Exit(report.exit_code)

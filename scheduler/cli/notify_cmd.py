"""``etcron notifications [JOB]``: recent notification deliveries and failures."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from scheduler.cli.common import Format, OutputOpt, globals_of, job_name


def register(app: typer.Typer) -> None:
    app.command()(notifications)


def notifications(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(metavar="[JOB]", help="only this job's", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, max=1000, help="how many")] = 50,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Recent notifications (webhook, Slack, email): delivered, failed, rate-limited.

    Newest first. A failed one says why in ERROR (-o wide: the whole error).

    \b
    Examples:
      etcron notifications                 # every job's
      etcron notifications backup -n 10    # one job's
    """
    from scheduler.cli import render

    job = job_name(name) if name is not None else None
    params: dict[str, Any] = {"limit": limit}
    if job is not None:
        params["job"] = job
    with globals_of(ctx).client() as api:
        data = api.request("GET", "/v1/notifications", params=params)
    if not output.tabular:
        render.emit(data, output)
        return
    if data.get("complete") is False:
        render.warn("too many delivery records to read them all: name a job to see all of its")
    headers = ["UPDATED", "JOB", "RUN ID", "EVENT", "SINK", "STATUS", "ATTEMPTS", "ERROR"]
    rows = [
        [
            render.when(d.get("updated")),
            str(d.get("job", "?")),
            str(d.get("run_id", "?")),
            str(d.get("event", "?")),
            f"{d.get('sink_kind', '?')} {d.get('sink', '')}",
            str(d.get("status", "?")),
            str(d.get("attempts", 0)),
            str(d.get("error") or "-"),
        ]
        for d in data.get("notifications", [])
    ]
    if not rows:
        render.say("no notifications" + (f" for job {job}" if job else ""))
        return
    render.print_table(headers, rows, wide=output is Format.WIDE, keep=("JOB", "EVENT", "STATUS"))

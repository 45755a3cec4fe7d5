"""``etcron run`` and ``etcron kill``: say which run, on which worker, and how it ended.

- ``run NAME``: refuses (exit 1, nothing sent) when no live worker can take the
  job (its selector matches no live worker's labels, or every worker is
  draining); else asks for a run and waits up to ``--pickup`` (10 s) for a
  worker to take it: ``started RUN_ID on WORKER``. Still untaken then: says so
  and exits 0 (the request lives 60 s). A request answered with ``skipped``
  (``concurrency: forbid`` and a run still active) is exit 1.
- ``run NAME --wait``: then follows the run to its end and exits with its
  status: 0 ``succeeded``; 1 ``failed``, ``timed_out``, ``killed``, ``lost``,
  ``skipped``, or no worker took the request before it expired.
- ``kill NAME``: asks every worker to stop the job's running runs and waits up
  to ``--wait-for`` (10 s) for them to end: ``killed RUN_ID on WORKER``, or
  ``nothing was running``.

Waiting polls the run records (every 0.2 s, bounded); ``--wait`` follows the
run's output stream, which ends when the run does.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import NameArg, globals_of, job_name
from scheduler.cli.errors import CliError

if TYPE_CHECKING:
    from scheduler.cli.client import ApiClient

POLL = 0.2
REQUEST_TTL = 60.0
"""Seconds a manual run request lives (``TRIGGER_TTL`` on the master)."""


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(kill)


def run(
    ctx: typer.Context,
    name: NameArg,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the run to its end; exit 0 only if it succeeded")
    ] = False,
    pickup: Annotated[
        float,
        typer.Option("--pickup", min=0, help="seconds to wait for a worker to take the run"),
    ] = 10.0,
) -> None:
    """Run a job now, and say which worker took it.

    Exit 1 if no live worker can run the job (nothing is sent). Without --wait,
    exit 0 once a worker takes the run, or after --pickup seconds (the request
    lives 60 s). With --wait, the run's status: 0 succeeded, 1 anything else.

    \b
    Examples:
      etcron run backup            # run id and worker
      etcron run backup --wait     # and exit with its status
    """
    from scheduler.cli import render, status

    name = job_name(name)
    with globals_of(ctx).client() as api:
        spec = api.get_job(name)["spec"]  # an unknown job: 404, exit 1
        live = api.workers()["workers"]
        if not status.eligible(spec.get("selector"), live):
            raise CliError(status.nobody_can_run(name, spec.get("selector"), live))
        request = api.run(name)["request_id"]
        started = time.monotonic()
        rec = _taken(api, name, request, REQUEST_TTL if wait else pickup)
        if rec is None:
            waited = time.monotonic() - started
            if wait:
                raise CliError(
                    f"no worker took the run of {name} (request {request}) "
                    f"within {waited:.0f} s; the request has expired"
                )
            render.say(
                f"run requested: {name} (request {request}); no worker has taken it "
                f"after {waited:.0f} s, still waiting (the request lives 60 s; "
                f"etcron history {name} shows it when it starts)"
            )
            return
        if rec["status"] in status.NOT_RUN:
            raise CliError(
                f"run {rec['run_id']} of {name} was {rec['status']} on worker "
                f"{rec.get('worker') or '?'}: {rec.get('message') or 'not run'}"
            )
        render.say(f"started {rec['run_id']} on {rec.get('worker') or '?'}")
        if not wait:
            return
        final = _follow(api, name, rec["run_id"])
    how = status.ending(final)
    render.say(f"{final['status']} {final['run_id']}{' (' + how + ')' if how else ''}")
    raise typer.Exit(status.exit_code(str(final["status"])))


def _taken(api: ApiClient, name: str, request: str, within: float) -> dict[str, Any] | None:
    """The run record that answers ``request``, once a worker writes it."""
    deadline = time.monotonic() + within
    while True:
        for rec in api.runs(name, 20)["runs"]:
            if rec.get("request_id") == request:
                return dict(rec)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL)


def _follow(api: ApiClient, name: str, run_id: str) -> dict[str, Any]:
    """The run's final record: its output stream ends when the run does."""
    path = f"/v1/jobs/{name}/runs/{run_id}/output"
    with contextlib.closing(api.stream(path, {"follow": "true"})) as items:
        for item in items:
            if item.get("type") == "end":
                return dict(item["run"])
    return dict(api.get_run(name, run_id))  # the stream ended without an end line


def kill(
    ctx: typer.Context,
    name: NameArg,
    wait_for: Annotated[
        float, typer.Option("--wait-for", min=0, help="seconds to wait for the runs to end")
    ] = 10.0,
) -> None:
    """Stop every running run of a job, and say which runs ended.

    A run whose worker is gone is ended at once (as killed); live workers stop
    theirs (SIGTERM, then SIGKILL after worker.kill_grace) and record them.
    """
    from scheduler.cli import render

    name = job_name(name)
    with globals_of(ctx).client() as api:
        running = [r for r in api.runs(name, 100)["runs"] if r.get("status") == "running"]
        answer = api.kill(name)
        orphans = set(answer.get("ended") or [])
        if not running and not orphans:
            render.say(f"nothing was running for job {name}")
            return
        pending = {r["run_id"]: r for r in running if r["run_id"] not in orphans}
        for run_id in sorted(orphans):
            render.say(f"killed {run_id} (its worker is gone; recorded killed)")
        deadline = time.monotonic() + wait_for
        while pending:
            for run_id in sorted(pending):
                rec = api.get_run(name, run_id)
                if rec.get("status") != "running":
                    del pending[run_id]
                    worker = rec.get("worker") or "?"
                    if rec.get("status") == "killed":
                        render.say(f"killed {run_id} on {worker}")
                    else:
                        render.say(
                            f"{run_id} on {worker} ended {rec.get('status')} before the kill"
                        )
            if pending and time.monotonic() >= deadline:
                for run_id, rec in sorted(pending.items()):
                    render.say(
                        f"kill requested for {run_id} on {rec.get('worker') or '?'}; "
                        f"still running after {wait_for:.0f} s"
                    )
                return
            if pending:
                time.sleep(POLL)

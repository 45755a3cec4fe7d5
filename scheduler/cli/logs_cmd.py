"""``etcron logs``: print a run's output, or follow runs live, from any host.

- no option: the latest run that started (skipped/missed ticks have no output);
  ``--previous`` the one before; ``--run ID`` a given run;
- ``-f``: follow the latest run until it ends; with ``--all-runs`` keep
  following the next runs, each introduced by a header and closed by its status;
- ``--stream stdout|stderr`` one stream only; ``--timestamps`` prefix each
  piece with the time it was read; ``--since 1h`` only output newer than that.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from scheduler.cli.client import ApiClient, InvalidInput, NotFound
from scheduler.durations import parse_duration

RUNNABLE = {"running", "succeeded", "failed", "timed_out", "killed", "lost"}


class Stream(StrEnum):
    BOTH = "both"
    STDOUT = "stdout"
    STDERR = "stderr"


class Printer:
    def __init__(self, stream: Stream, timestamps: bool, since: float | None) -> None:
        self.stream = stream
        self.timestamps = timestamps
        self.since = since

    def segment(self, seg: dict[str, Any]) -> None:
        kind = seg.get("stream")
        if self.stream is not Stream.BOTH and kind not in (self.stream.value, "etcron"):
            return
        if self.since is not None and float(seg.get("time", 0)) < self.since:
            return
        text = str(seg.get("text", ""))
        if self.timestamps:
            stamp = datetime.fromtimestamp(float(seg.get("time", 0)), UTC).strftime("%H:%M:%S.%f")[
                :-3
            ]
            text = "".join(f"{stamp} {line}" for line in text.splitlines(keepends=True))
        out = sys.stderr if kind == "stderr" and self.stream is Stream.BOTH else sys.stdout
        out.write(text)
        out.flush()

    @staticmethod
    def header(run: dict[str, Any]) -> None:
        sys.stdout.write(
            f"==> run {run['run_id']} tick {run.get('tick')} on {run.get('worker') or '?'}"
            f"{' (manual)' if run.get('manual') else ''}\n"
        )
        sys.stdout.flush()

    @staticmethod
    def footer(run: dict[str, Any]) -> None:
        code = run.get("exit_code")
        sig = run.get("signal")
        how = f"exit {code}" if code is not None else f"signal {sig}" if sig else ""
        sys.stdout.write(f"<== {run['status']}{' (' + how + ')' if how else ''}\n")
        sys.stdout.flush()


def _pick(
    api: ApiClient, name: str, run_id: str | None, previous: bool
) -> tuple[dict[str, Any], str]:
    """The run to show and the id just before it (for following from there)."""
    runs = [r for r in api.runs(name, 50)["runs"] if r["status"] in RUNNABLE]
    if run_id is not None:
        rec = api.get_run(name, run_id)
        before = [r["run_id"] for r in runs if r["run_id"] < run_id]
        return rec, before[0] if before else ""
    index = 1 if previous else 0
    if len(runs) <= index:
        raise NotFound(f"job {name!r} has no {'previous ' if previous else ''}run with output yet")
    after = runs[index + 1]["run_id"] if len(runs) > index + 1 else ""
    return runs[index], after


def logs(
    api: ApiClient,
    name: str,
    *,
    run_id: str | None,
    previous: bool,
    follow: bool,
    all_runs: bool,
    stream: Stream,
    timestamps: bool,
    since: str | None,
) -> None:
    since_ts = time.time() - since_seconds(since) if since is not None else None
    printer = Printer(stream, timestamps, since_ts)
    rec, before = _pick(api, name, run_id, previous)
    if all_runs:
        for item in api.stream(f"/v1/jobs/{name}/follow", {"after": before}):
            _show(printer, item, headers=True)
        return
    if follow:
        path = f"/v1/jobs/{name}/runs/{rec['run_id']}/output"
        for item in api.stream(path, {"follow": "true"}):
            _show(printer, item, headers=False)
        return
    data = api.output(name, rec["run_id"])
    for seg in data["output"]:
        printer.segment(seg)


def since_seconds(text: str) -> float:
    """``--since``: a duration back from now (``1h``); anything else is invalid input (exit 2)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"--since {text!r}: {exc}") from exc


def _show(printer: Printer, item: dict[str, Any], *, headers: bool) -> None:
    kind = item.get("type")
    if kind == "output":
        printer.segment(item)
    elif kind == "run" and headers:
        printer.header(item["run"])
    elif kind == "end" and headers:
        printer.footer(item["run"])


def register(app: typer.Typer, client_of: Any) -> None:
    @app.command("logs")
    def logs_command(
        ctx: typer.Context,
        name: str,
        run: Annotated[str | None, typer.Option("--run", help="a run id")] = None,
        previous: Annotated[
            bool, typer.Option("--previous", "-p", help="the run before the latest")
        ] = False,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="follow the run live")] = False,
        all_runs: Annotated[
            bool, typer.Option("--all-runs", help="with -f: keep following new runs")
        ] = False,
        stream: Annotated[
            Stream, typer.Option("--stream", help="both, stdout or stderr")
        ] = Stream.BOTH,
        timestamps: Annotated[
            bool, typer.Option("--timestamps", help="prefix output with its time")
        ] = False,
        since: Annotated[
            str | None, typer.Option("--since", help="only output newer than, e.g. 1h")
        ] = None,
    ) -> None:
        """Print a run's output (the latest by default), or follow it live with -f."""
        if since is not None:
            since_seconds(since)  # invalid input is exit 2 before any request
        with client_of(ctx) as api:
            logs(
                api,
                name,
                run_id=run,
                previous=previous,
                follow=follow,
                all_runs=all_runs,
                stream=stream,
                timestamps=timestamps,
                since=since,
            )

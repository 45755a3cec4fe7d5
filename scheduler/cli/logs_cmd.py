"""``etcron logs``: print a run's output, or follow runs live, from any host.

- no option: the latest run that started (skipped/missed ticks have no output);
  ``--previous`` the one before; ``--run ID`` a given run;
- ``-f``: follow the latest run until it ends; with ``--all-runs`` keep
  following the next runs, each introduced by a header and closed by its status;
- ``--stream stdout|stderr`` one stream only; ``--timestamps`` prefix each
  line with the time it was read; ``--since 1h`` only output newer than that.
- Both streams of the job go to stdout, in order (a pipe keeps both);
  ``--mark-stderr`` prefixes the job's stderr lines with ``[stderr] ``.
- ``-f`` on a job that has not run yet says so on stderr and waits for its
  first run (until Ctrl-C).
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import NameArg
from scheduler.cli.errors import InvalidInput, NotFound
from scheduler.durations import parse_duration

if TYPE_CHECKING:
    from scheduler.cli.client import ApiClient

RUNNABLE = {"running", "succeeded", "failed", "timed_out", "killed", "lost"}


class Stream(StrEnum):
    BOTH = "both"
    STDOUT = "stdout"
    STDERR = "stderr"


STDERR_MARK = "[stderr] "


class Printer:
    """Writes output segments to stdout, prefixing each line that starts
    (``--timestamps``, ``--mark-stderr``) and never a line's continuation."""

    def __init__(
        self, stream: Stream, timestamps: bool, since: float | None, mark_stderr: bool = False
    ) -> None:
        self.stream = stream
        self.timestamps = timestamps
        self.since = since
        self.mark_stderr = mark_stderr
        self._line_start = True

    def segment(self, seg: dict[str, Any]) -> None:
        kind = seg.get("stream")
        if self.stream is not Stream.BOTH and kind not in (self.stream.value, "etcron"):
            return
        if self.since is not None and float(seg.get("time", 0)) < self.since:
            return
        prefix = ""
        if self.timestamps:
            stamp = datetime.fromtimestamp(float(seg.get("time", 0)), UTC)
            prefix += stamp.strftime("%H:%M:%S.%f")[:-3] + " "
        if self.mark_stderr and kind == "stderr":
            prefix += STDERR_MARK
        pieces = []
        for line in str(seg.get("text", "")).splitlines(keepends=True):
            pieces.append(prefix + line if self._line_start else line)
            self._line_start = line.endswith("\n")
        sys.stdout.write("".join(pieces))
        sys.stdout.flush()

    def header(self, run: dict[str, Any]) -> None:
        self._end_line()
        sys.stdout.write(
            f"==> run {run['run_id']} tick {run.get('tick')} on {run.get('worker') or '?'}"
            f"{' (manual)' if run.get('manual') else ''}\n"
        )
        sys.stdout.flush()

    def footer(self, run: dict[str, Any]) -> None:
        self._end_line()
        code = run.get("exit_code")
        sig = run.get("signal")
        how = f"exit {code}" if code is not None else f"signal {sig}" if sig else ""
        sys.stdout.write(f"<== {run['status']}{' (' + how + ')' if how else ''}\n")
        sys.stdout.flush()

    def _end_line(self) -> None:
        """Headers and footers start on a line of their own."""
        if not self._line_start:
            sys.stdout.write("\n")
            self._line_start = True


def _pick(
    api: ApiClient, name: str, run_id: str | None, previous: bool
) -> tuple[dict[str, Any] | None, str]:
    """The run to show (None: the job has no run with output yet) and the id to
    follow from (runs after it)."""
    listed = api.runs(name, 50)["runs"]  # an unknown job is a 404: exit 1
    runs = [r for r in listed if r["status"] in RUNNABLE]
    if run_id is not None:
        rec = api.get_run(name, run_id)
        before = [r["run_id"] for r in runs if r["run_id"] < run_id]
        return rec, before[0] if before else ""
    index = 1 if previous else 0
    if len(runs) <= index:
        if previous:
            raise NotFound(f"job {name!r} has no previous run with output yet")
        return None, listed[0]["run_id"] if listed else ""
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
    mark_stderr: bool = False,
) -> None:
    since_ts = time.time() - since_seconds(since) if since is not None else None
    printer = Printer(stream, timestamps, since_ts, mark_stderr)
    rec, before = _pick(api, name, run_id, previous)
    if rec is None:
        if not (follow or all_runs):
            raise NotFound(f"job {name!r} has no run with output yet (-f waits for one)")
        sys.stderr.write(f"waiting for the first run of job {name!r} (Ctrl-C to stop)\n")
        sys.stderr.flush()
    if all_runs or rec is None:
        # every run after `before`, as it starts; without --all-runs only the first
        with contextlib.closing(api.stream(f"/v1/jobs/{name}/follow", {"after": before})) as items:
            for item in items:
                _show(printer, item, headers=all_runs)
                if item.get("type") == "end" and not all_runs:
                    return
        return
    if follow:
        path = f"/v1/jobs/{name}/runs/{rec['run_id']}/output"
        with contextlib.closing(api.stream(path, {"follow": "true"})) as items:
            for item in items:
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


LOGS_HELP = """Print a run's output (the latest by default); -f follows it.

The job's stdout and stderr both go to stdout, in order (--mark-stderr
prefixes stderr lines with "[stderr] "). -f on a job that has not run yet
waits for its first run (Ctrl-C to stop).

\b
Examples:
  etcron logs backup                     # the latest run that started
  etcron logs backup -f --all-runs       # this run and every next one, live
  etcron logs backup --previous --mark-stderr | grep stderr
"""


def register(app: typer.Typer, client_of: Any) -> None:
    @app.command("logs", help=LOGS_HELP)
    def logs_command(
        ctx: typer.Context,
        name: NameArg,
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
        mark_stderr: Annotated[
            bool, typer.Option("--mark-stderr", help='prefix stderr lines with "[stderr] "')
        ] = False,
        timestamps: Annotated[
            bool, typer.Option("--timestamps", help="prefix each line with its time")
        ] = False,
        since: Annotated[
            str | None, typer.Option("--since", help="only output newer than, e.g. 1h")
        ] = None,
    ) -> None:
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
                mark_stderr=mark_stderr,
            )

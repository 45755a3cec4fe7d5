"""What every command module shares: option types, the global options, names.

Start-up rule: this module and every ``*_cmd`` module import only the standard
library, typer and each other at module level. The client (httpx), the output
(rich, yaml), the job model (pydantic, croniter) and the config are imported
inside the commands that use them, so ``etcron --help`` and ``etcron version``
load none of them (``bench/cli_startup.py``; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.errors import InvalidInput
from scheduler.cli.target import Globals

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
"""The job name rule of :data:`scheduler.model.NAME_RE` (a unit test keeps them equal)."""


class Format(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"

    @property
    def tabular(self) -> bool:
        return self in (Format.TABLE, Format.WIDE)


OutputOpt = Annotated[
    Format,
    typer.Option("-o", "--output", help="table, wide (whole values, more columns), json or yaml"),
]
FileOpt = Annotated[Path, typer.Option("-f", "--file", help="a jobs YAML file")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", envvar="ETCRON_CONFIG", help="config file (YAML)")
]


def complete_job_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of a job name: the server's jobs, asked with a 1 s bound; none on error."""
    root = ctx.find_root().params
    target = Globals(root.get("server"), root.get("token"), root.get("config"), root.get("cacert"))
    try:
        from scheduler.cli.client import ApiClient

        server, token, cacert = target.resolve()
        with ApiClient(server, token, timeout=1.0, ca_file=cacert) as api:
            names = [str(job["name"]) for job in api.list_jobs()["jobs"]]
    except Exception:  # completion never prints an error into the user's command line
        return []
    return [name for name in names if name.startswith(incomplete)]


NameArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="the job's name",
        show_default=False,
        autocompletion=complete_job_names,
    ),
]


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_object(Globals)
    assert obj is not None
    return obj


def job_name(name: str) -> str:
    """``name`` if it is a valid job name; else invalid input (exit 2, nothing sent)."""
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"{name!r} is not a valid job name (1-63 lowercase letters, digits and '-')"
        )
    return name

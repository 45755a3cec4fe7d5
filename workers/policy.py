"""Worker-side policy: what a worker agrees to run, whoever wrote the job.

:func:`check` is pure and cheap, but is still called once per spec revision
(:class:`workers.admission.Admission` caches its answer), never per tick. Each
rule of ``worker.policy`` that is set must hold; the first that does not is
named in the answer, which becomes the refused job's record.

- ``commands``: the program must match one of the globs. The program is
  ``command[0]`` for a ``command`` job and ``/bin/sh`` (the interpreter
  etcron runs ``shell`` bodies with) for a ``shell`` job. Under this rule a
  program must be an absolute, normalised path (no ``..``): a bare name would
  be looked up in a ``PATH`` the job itself can set. Globs match path
  segments (``/usr/bin/*`` does not match ``/usr/bin/x/y``).
- ``users``: the run-as user (the job's ``user``, else the worker's default
  user when the worker is root) must match one of the globs. Whatever the
  rule, ``root`` runs a job only when the job asks for ``user: root`` and
  ``users`` lists ``root`` explicitly.
- ``max_timeout``: the job must set a ``timeout``, at most this.
- ``max_output_limit``: the job's ``output_limit`` (or the worker's default) at most this.
- ``env``: every name in the job's ``env`` must match one of the globs.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import PurePosixPath

from scheduler.config import PolicyConfig
from scheduler.durations import format_duration
from scheduler.model import JobSpec

SHELL = "/bin/sh"


def program(job: JobSpec) -> str:
    """The program the policy's ``commands`` rule looks at."""
    if job.shell is not None:
        return SHELL
    assert job.command
    return job.command[0]


def _path_allowed(path: str, globs: list[str]) -> bool:
    if not path.startswith("/") or os.path.normpath(path) != path or "/../" in f"{path}/":
        return False
    p = PurePosixPath(path)
    return any(g.startswith("/") and p.match(g) for g in globs)


def check(
    job: JobSpec, policy: PolicyConfig, *, run_as: str | None, output_limit: int
) -> str | None:
    """None when ``job`` is within ``policy``, else the rule it breaks, in words.

    ``run_as`` is the user the job would run as (None: the worker's own user);
    ``output_limit`` the worker's default ``output_limit``.
    """
    if policy.commands is not None:
        prog = program(job)
        if not _path_allowed(prog, policy.commands):
            return (
                f"policy.commands: program {prog!r} is not allowed "
                f"(allowed: {', '.join(policy.commands) or 'none'}; absolute paths only)"
            )
    if run_as is not None:
        if run_as == "root" and (job.user != "root" or "root" not in (policy.users or [])):
            return "policy.users: root runs only jobs with user: root, and only if users lists root"
        if policy.users is not None and not any(
            fnmatch.fnmatchcase(run_as, g) for g in policy.users
        ):
            return (
                f"policy.users: run-as user {run_as!r} is not allowed "
                f"(allowed: {', '.join(policy.users) or 'none'})"
            )
    if policy.max_timeout is not None:
        if job.timeout is None:
            return (
                f"policy.max_timeout: the job sets no timeout; "
                f"at most {format_duration(policy.max_timeout)} is allowed"
            )
        if job.timeout > policy.max_timeout:
            return (
                f"policy.max_timeout: timeout {format_duration(job.timeout)} is over "
                f"{format_duration(policy.max_timeout)}"
            )
    if policy.max_output_limit is not None:
        limit = job.output_limit if job.output_limit is not None else output_limit
        if limit > policy.max_output_limit:
            return (
                f"policy.max_output_limit: output_limit {limit} is over {policy.max_output_limit}"
            )
    if policy.env is not None:
        for name in job.env:
            if not any(fnmatch.fnmatchcase(name, g) for g in policy.env):
                return (
                    f"policy.env: variable {name!r} is not allowed "
                    f"(allowed: {', '.join(policy.env) or 'none'})"
                )
    return None

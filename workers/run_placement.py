"""Who runs a job and inside which cgroup: the run-as user and the run's limits.

- A job without ``user`` runs as the worker's default user
  (``workers.admission.default_run_as``); one with ``user`` only where
  ``worker.allow_run_as`` is on and the user exists on the host.
- A job with ``resources`` gets one cgroup per attempt (``workers.cgroups``),
  owned by the run-as user; a host that cannot enforce the limits fails the
  run with a message saying why (detected once, at the first job that asks).

Each answer is ``(value, "")`` or ``(None, why)``: the runner records ``why``.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable

from scheduler.model import JobSpec
from workers.cgroups import CgroupHost, Limits, RunCgroup


class RunPlacement:
    def __init__(
        self,
        *,
        allow_run_as: bool,
        default_user: str | None = None,
        cgroups: Callable[[], tuple[CgroupHost | None, str]] = CgroupHost.detect,
    ) -> None:
        self.allow_run_as = allow_run_as
        self.default_user = default_user
        """Who runs a job without ``user`` (``workers.admission.default_run_as``)."""
        self._detect = cgroups
        self._cgroups: tuple[CgroupHost | None, str] | None = None

    def user(self, job: JobSpec) -> tuple[str | None, str]:
        if job.user is None:
            return self.default_user, ""
        if not self.allow_run_as:
            return None, f"run-as user {job.user!r} refused: worker.allow_run_as is off"
        try:
            pwd.getpwnam(job.user)
        except KeyError:
            return None, f"run-as user {job.user!r} does not exist on this host"
        return job.user, ""

    def cgroup(self, job: JobSpec, name: str, user: str | None) -> tuple[RunCgroup | None, str]:
        """The attempt's cgroup for a job with ``resources`` (None, "" without); or (None, why)."""
        res = job.resources
        if res is None:
            return None, ""
        if self._cgroups is None:
            self._cgroups = self._detect()  # once, at the first job that asks
        host, why = self._cgroups
        if host is None:
            return None, f"resources are set, but this host cannot enforce them: {why}"
        try:
            cg = host.create(name, Limits(memory=res.memory, cpu=res.cpu, pids=res.pids))
            if user is not None:
                pw = pwd.getpwnam(user)
                cg.allow(pw.pw_uid, pw.pw_gid)
        except (OSError, KeyError) as exc:
            return None, f"cannot set up the run's cgroup (resources): {exc}"
        return cg, ""

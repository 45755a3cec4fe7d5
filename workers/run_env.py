"""What a run's child is started with: its argv and a clean environment.

The environment is a few names of the worker's own (``BASE_ENV``), the job's
``env``, and the run's identity (``ETCRON_JOB``, ``ETCRON_TICK``,
``ETCRON_RUN_ID``, ``ETCRON_FENCING_TOKEN``, ``ETCRON_WORKER``,
``ETCRON_ATTEMPT``); nothing else of the worker's environment (its credentials)
reaches a job.
"""

from __future__ import annotations

import os

from scheduler.model import JobSpec
from scheduler.runs import RunRecord

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR")


def child_env(job: JobSpec, rec: RunRecord, worker_id: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(job.env)
    env.update(
        ETCRON_JOB=job.name,
        ETCRON_TICK=rec.tick.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        ETCRON_RUN_ID=rec.run_id,
        ETCRON_FENCING_TOKEN=str(rec.fencing_token),
        ETCRON_WORKER=worker_id,
        ETCRON_ATTEMPT=str(rec.attempt),
    )
    return env


def argv_of(job: JobSpec) -> list[str]:
    if job.shell is not None:
        return ["/bin/sh", "-c", job.shell]
    assert job.command
    return list(job.command)

"""Scenario 21 (issue 11, item 6): a worker whose ``log_dir`` is full.

Worker w0 keeps its local copy of every run's output on a 64 KiB tmpfs that
fills within a few runs. The local file is best effort: a full disk loses the
local copy (one warning per run) and never the run, so every tick keeps running
on every worker, every run ends with a final record and its lock released.
Needs root (to mount the tmpfs); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path

from proof import ledger as checker
from scheduler.runs import RunStatus
from tests.chaos.rig import Rig
from tests.chaos.scenarios import Opts, Result, result
from tests.chaos.scenarios_net import skipped
from tests.support import wait_for

JOBS = ["j0", "j1", "j2"]


@contextlib.contextmanager
def full_tmpfs(path: Path, size: str = "64k"):  # type: ignore[no-untyped-def]
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def full_log_dir(o: Opts) -> Result:
    name = "full log_dir on one worker"
    if os.geteuid() != 0:
        return skipped(21, name, "needs root to mount a tmpfs")
    base = o.dir("21-full-log-dir")
    with full_tmpfs(base / "logs") as logs:
        # each run prints 8 KiB: the 64 KiB tmpfs is full after a handful of runs
        opts = {0: {"log_dir": str(logs)}}
        async with Rig(base, worker_opts=opts) as rig:
            noisy = "head -c 8192 /dev/zero | tr '\\0' x; "
            jobs = [rig.job(j) for j in JOBS]
            jobs = [j.model_copy(update={"shell": noisy + (j.shell or "")}) for j in jobs]
            await rig.put_jobs(*jobs)
            t0 = await rig.warm(*JOBS)
            f = rig.fault("w0's log_dir full (64 KiB tmpfs)")
            await asyncio.sleep(o.hold)
            t1 = time.time()
            rig.heal(f)
            # stop the jobs, then let the last runs end: a wedged run would keep
            # its record "running" and its lock for ever
            await rig.put_jobs(*(j.model_copy(update={"suspend": True}) for j in jobs))

            async def released() -> bool:
                return not any([await rig.holder(j) for j in JOBS])

            with contextlib.suppress(AssertionError):
                await wait_for(released, timeout=10)
            records = {j: await rig.records(j) for j in JOBS}
            locks = {j: await rig.holder(j) for j in JOBS}
        used = os.statvfs(logs)
    lines = rig.lines()
    rep = checker.check(lines, window=(t0, t1), every_second=JOBS)
    on_w0 = [e for e in lines if e.is_start and e.worker == "w0" and t0 <= e.at <= t1]
    w0_records = [r for recs in records.values() for r in recs.values() if r.worker == "w0"]
    wedged = [r.run_id for r in w0_records if r.status is RunStatus.RUNNING]
    failed = [r.run_id for r in w0_records if r.status is not RunStatus.SUCCEEDED]
    warnings = (base / "w0.log").read_text(errors="replace").count("local log file")
    res = result(
        21,
        name,
        rig,
        rep,
        log_dir_filled_up=warnings > 0,  # local writes failed: ENOSPC
        at_most_one_warning_per_run=warnings <= len(w0_records),
        w0_kept_running_jobs=len(on_w0) > 0,
        no_run_left_running=not wedged,
        every_w0_run_succeeded=not failed,
        no_lock_left_behind=not any(locks.values()),
    )
    res.faults = [f"{f.label}"]
    res.notes = {
        "runs_on_w0": len(on_w0),
        "w0_records": len(w0_records),
        "local_file_warnings_in_w0_log": warnings,
        "tmpfs_free_blocks": used.f_bavail,
    }
    return res

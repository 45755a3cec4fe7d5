"""Scenarios 18-20 (issue 11, item 6): network namespaces and a slow disk.

18 and 19 run every etcd member and every worker in its own network namespace
(:mod:`tests.chaos.netns`) and cut one worker's link to the etcd leader, both ways
(18) or only from the worker's side (19). 20 throttles the etcd leader's disk writes
with the cgroup v1 blkio controller (:mod:`tests.chaos.slowdisk`). Each needs root;
without it (or without ``ip`` / the blkio throttle) the scenario is skipped and says
why in its name and notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from typing import Any

from proof import ledger as checker
from scheduler.runs import RunRecord, RunStatus
from tests.chaos import netns, slowdisk
from tests.chaos.rig import Rig
from tests.chaos.scenarios import Opts, Result, result

JOBS = ["j0", "j1", "j2"]
SLOW_JOBS = ["k0", "k1"]
"""Scenario 20's jobs every 2 s: a ``forbid`` job needs a claim and then a release
to commit in turn for each run, so on a disk that makes each commit take ~0.4-1 s
a period of 2 s holds both where 1 s does not always."""
MAX_INTERVAL = 3.0  # longest time allowed between consecutive started ticks of a job


def skipped(n: int, name: str, reason: str) -> Result:
    res = Result(n, f"{name} (skipped: {reason})", checker.Report(), [], {})
    res.notes = {"skipped": reason}
    return res


def intervals(lines: list[checker.Line], lo: float, hi: float) -> dict[str, float]:
    """Per job, the longest time between consecutive started ticks in [lo, hi]
    (1.0 when every second started)."""
    return {j: round(checker.gaps(lines, j, lo, hi) + 1.0, 2) for j in JOBS}


def ms(x: float) -> int | None:
    return None if math.isnan(x) else round(x * 1000)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def not_run(
    lines: list[checker.Line], records: dict[str, dict[str, RunRecord]], lo: int, hi: int
) -> tuple[list[tuple[str, int]], dict[tuple[str, int], str]]:
    """Expected (job, second) ticks in [lo, hi] that did not start, and the status of
    the missed/skipped record of each not-run tick that has one."""
    ran = {(e.job, round(e.tick)) for e in lines if e.is_start}
    recorded: dict[tuple[str, int], str] = {}
    for j, recs in records.items():
        for r in recs.values():
            if r.status in (RunStatus.MISSED, RunStatus.SKIPPED):
                recorded[(j, round(r.tick.timestamp()))] = str(r.status)
    missing = [(j, s) for j in JOBS for s in range(lo, hi + 1) if (j, s) not in ran]
    return missing, {k: recorded[k] for k in missing if k in recorded}


async def _victim(rig: Rig, lab: netns.Lab, lead: int) -> tuple[int, bool]:
    """The worker with an open connection to member ``lead`` (worker ``lead`` lists it
    first, so normally that one); True if the connection was seen."""
    member = rig.cluster.members[lead]

    def probe() -> int | None:
        order = sorted(range(len(rig.workers)), key=lambda i: i != lead)
        for i in order:
            w = rig.workers[i]
            if w.proc is not None and netns.established(
                w.pid, lab.member_addrs[lead], member.client_port
            ):
                return i
        return None

    for _ in range(20):
        found = probe()
        if found is not None:
            return found, True
        await asyncio.sleep(0.1)
    return lead % len(rig.workers), False


# 18 / 19 ---------------------------------------------------------------------------


async def _cut(o: Opts, n: int, name: str, *, both_ways: bool) -> Result:
    reason = netns.unavailable()
    if reason:
        return skipped(n, name, reason)
    hold = 15.0
    with netns.Lab(members=3, workers=3) as lab:
        async with Rig(o.dir(f"{n}-{'cut' if both_ways else 'one-way'}"), net=lab) as rig:
            await rig.put_jobs(
                *(rig.job(j) for j in JOBS),
                *(rig.job(k, schedule="*/2 * * * * *") for k in SLOW_JOBS),
            )
            t0 = await rig.warm(*JOBS)
            await asyncio.sleep(2.0)
            lead = await asyncio.to_thread(rig.cluster.leader_index)
            assert lead is not None, "no etcd leader"
            vi, seen = await _victim(rig, lab, lead)
            wns, maddr = lab.worker_ns[vi], lab.member_addrs[lead]
            member = rig.cluster.members[lead].name
            how = "both ways" if both_ways else f"w{vi} -> {member} only"
            f = rig.fault(f"cut w{vi} from leader {member} {how} {hold:.0f}s", settle=2.0)
            try:
                lab.block(wns, maddr)
                if both_ways:
                    lab.block(lab.member_ns[lead], lab.worker_addrs[vi])
                await asyncio.sleep(hold)
            finally:
                lab.unblock_all()
            rig.heal(f)
            still_leader = await asyncio.to_thread(rig.cluster.leader_index)
            await asyncio.sleep(8.0)
            t1 = time.time()
            regs = await rig.registrations()
            await asyncio.sleep(1.5)
            records = {j: await rig.records(j) for j in JOBS}
        left = lab  # checked below, after close
    lines = rig.lines()
    rep = checker.check(lines, window=(t0, t1), every_second=JOBS, faults=rig.faults)
    longest = intervals(lines, t0, t1)
    worst = max(longest.values())
    in_cut = [e for e in lines if e.is_start and f.start <= e.tick <= f.end]
    missing, why = not_run(lines, records, math.ceil(t0) + 1, math.floor(t1) - 1)
    res = result(
        n,
        name,
        rig,
        rep,
        longest_interval_between_started_ticks_le_3s=worst <= MAX_INTERVAL,
        torn_down=not left.leftovers(),
    )
    res.notes = {
        "victim": f"w{vi}",
        "victim_connected_to_leader": seen,
        "leader": member,
        "leader_after": rig.cluster.members[still_leader].name
        if still_leader is not None
        else None,
        "longest_interval_s": longest,
        "lag_during_cut_ms": {
            "p50": ms(pct([e.at - e.tick for e in in_cut], 0.5)),
            "p99": ms(pct([e.at - e.tick for e in in_cut], 0.99)),
        },
        "starts_during_cut_by_worker": {
            w: sum(1 for e in in_cut if e.worker == w) for w in sorted({e.worker for e in in_cut})
        },
        "not_run": [
            f"{j}@{checker.show_tick(t)}:{why.get((j, t), 'no record')}" for j, t in missing
        ][:12],
        "registered_after": sorted(regs),
    }
    return res


async def leader_link_cut(o: Opts) -> Result:
    return await _cut(o, 18, "worker cut from the etcd leader", both_ways=True)


async def one_way_cut(o: Opts) -> Result:
    return await _cut(o, 19, "one-way cut worker -> leader", both_ways=False)


# 20 --------------------------------------------------------------------------------

IOPS = 20  # on the loop device: WAL fsync p50 ~150 ms, p99 ~500 ms (measured: see the notes)
WAL = "etcd_disk_wal_fsync_duration_seconds"
COMMIT = "etcd_disk_backend_commit_duration_seconds"


async def slow_leader_disk(o: Opts, iops: int = IOPS) -> Result:
    """Every-second and every-2-s jobs while the leader's writes are throttled: every
    tick must run, none more than 2 s late. By default the data
    dirs go on a loop device of their own even when /tmp is on a real disk: throttled
    on the host's shared disk (whose ext4 journal also carries everyone else's
    writes), fsync times were 2-4x longer and noisier for the same IOPS.
    ``ETCRON_CHAOS_LOOP=0`` keeps the host's disk, ``ETCRON_CHAOS_IOPS`` sets the limit."""
    name = "etcd leader with a slow disk"
    iops = int(os.environ.get("ETCRON_CHAOS_IOPS", iops))
    loop = os.environ.get("ETCRON_CHAOS_LOOP", "1") != "0"
    reason = slowdisk.unavailable()
    if reason:
        return skipped(20, name, reason)
    hold = 20.0
    base = o.dir("20-slow-disk")
    base.mkdir(parents=True, exist_ok=True)
    with slowdisk.DataDisk(base / "etcd", force_loop=loop) as disk:
        async with Rig(base) as rig:
            await rig.put_jobs(
                *(rig.job(j) for j in JOBS),
                *(rig.job(k, schedule="*/2 * * * * *") for k in SLOW_JOBS),
            )
            t0 = await rig.warm(*JOBS)
            await asyncio.sleep(2.0)
            lead = await asyncio.to_thread(rig.cluster.leader_index)
            assert lead is not None, "no etcd leader"
            m = rig.cluster.members[lead]
            assert m.pid is not None
            before = {
                h: await asyncio.to_thread(slowdisk.histogram, m.client_url, h)
                for h in (WAL, COMMIT)
            }
            f = rig.fault(f"{m.name} writes throttled to {iops} IOPS {hold:.0f}s", settle=2.0)
            leaders: list[int | None] = []
            with slowdisk.Throttle(m.pid, disk.device, iops):
                end = time.monotonic() + hold
                while time.monotonic() < end:  # the hold, watching who leads
                    leaders.append(await asyncio.to_thread(rig.cluster.leader_index, 0.5))
                    await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
                after = {
                    h: await asyncio.to_thread(slowdisk.histogram, m.client_url, h)
                    for h in (WAL, COMMIT)
                }
            rig.heal(f)
            await asyncio.sleep(6.0)
            t1 = time.time()
            await asyncio.sleep(1.5)
            records = {j: await rig.records(j) for j in JOBS}
            slow_records = {k: await rig.records(k) for k in SLOW_JOBS}
    lines = rig.lines()
    rep = checker.check(lines, window=(t0, t1), every_second=JOBS, faults=rig.faults)
    lo, hi = math.ceil(t0) + 1, math.floor(t1) - 1  # the checker's window
    expected = [(j, s) for j in JOBS for s in range(lo, hi + 1)]
    missing, recorded = not_run(lines, records, lo, hi)
    unaccounted = [k for k in missing if k not in recorded]
    lag_all = [e.at - e.tick for e in lines if e.is_start and lo <= e.tick <= hi]
    lag_fault = [e.at - e.tick for e in lines if e.is_start and f.start <= e.tick <= f.end]
    p99_fault = pct(lag_fault, 0.99)
    fault_ticks = [(j, s) for (j, s) in expected if f.start <= s <= f.end]
    # every-2-s jobs: every tick in the window (even seconds) must run
    slow_expected = [(k, t) for k in SLOW_JOBS for t in range(lo + lo % 2, hi + 1, 2)]
    slow_ran = {(e.job, round(e.tick)) for e in lines if e.is_start and e.job in SLOW_JOBS}
    slow_missing = [x for x in slow_expected if x not in slow_ran]
    slow_lag = [
        e.at - e.tick
        for e in lines
        if e.is_start and e.job in SLOW_JOBS and f.start <= e.tick <= f.end
    ]
    res = result(
        20,
        name,
        rig,
        rep,
        every_expected_tick_ran_or_recorded=not unaccounted,
        # every tick runs: a forbid run hands its lock to the next tick with its
        # release (one commit a run), so a 1 s period fits commits of ~0.4 s
        every_tick_runs=not missing and not slow_missing,
        # the bound: the commits of one claim at the tail (backend commit p99
        # ~1 s here) before the pace has adapted, plus a margin
        lag_max_le_2s=max(lag_all + slow_lag, default=0.0) <= 2.0,
    )

    def fig(h: str, q: float) -> Any:
        v = slowdisk.quantile(before[h], after[h], q)
        return None if v is None else round(v * 1000, 1)

    res.notes = {
        "disk": disk.how,
        "throttle": f"{iops} write IOPS on {disk.device} for {m.name} (pid {m.pid})",
        "wal_fsync_ms": {
            "n": slowdisk.observations(before[WAL], after[WAL]),
            "p50": fig(WAL, 0.5),
            "p99": fig(WAL, 0.99),
        },
        "backend_commit_ms": {"p50": fig(COMMIT, 0.5), "p99": fig(COMMIT, 0.99)},
        "leaders_during_fault": sorted(
            {rig.cluster.members[x].name for x in leaders if x is not None}
        ),
        "jobs_every_2s": {
            "ticks": len(slow_expected),
            "ran": len(slow_expected) - len(slow_missing),
            "missing": [f"{k}@{checker.show_tick(t)}" for k, t in slow_missing][:10],
            "lag_fault_ms": {"p50": ms(pct(slow_lag, 0.5)), "max": ms(max(slow_lag, default=0))},
            "records_read": sum(len(v) for v in slow_records.values()),
        },
        "ticks_expected": len(expected),
        "ticks_in_fault": len(fault_ticks),
        "ran": len(expected) - len(missing),
        "ran_in_fault": sum(1 for k in fault_ticks if k not in missing),
        "not_run_recorded": {
            s: sum(1 for k in missing if recorded.get(k) == s) for s in ("missed", "skipped")
        },
        "unaccounted": [f"{j}@{checker.show_tick(s)}" for j, s in unaccounted][:10],
        "lag_fault_ms": {
            "p50": ms(pct(lag_fault, 0.5)),
            "p99": ms(p99_fault),
            "max": ms(max(lag_fault, default=math.nan)),
        },
        "lag_all_ms": {"p50": ms(pct(lag_all, 0.5)), "p99": ms(pct(lag_all, 0.99))},
    }
    with contextlib.suppress(Exception):
        res.notes["longest_interval_s"] = intervals(lines, t0, t1)
    return res

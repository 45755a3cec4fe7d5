"""Scenarios 11-12: gray failures of etcd, a member frozen with its sockets open.

SIGSTOP keeps every TCP connection to the member established (the kernel still
accepts and acknowledges), but the member answers nothing, for 15 s, then
SIGCONT. Pass rule: 0 duplicates, 0 overlaps, 0 misses outside the fault window,
and for every job the longest time between two started runs is at most 3 s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request

from proof import ledger as checker
from tests.chaos.rig import Rig
from tests.chaos.scenarios import Opts, Result, result

FREEZE = 15.0
MAX_GAP = 3.0
JOBS = ["j0", "j1", "j2"]
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def _at_fraction(frac: float) -> None:
    """Sleep until the wall clock is ``frac`` of a second past a whole second."""
    now = time.time()
    await asyncio.sleep((frac - now % 1) % 1)


def _watch_streams(url: str) -> float:
    """Open watch streams on a member (from its /metrics): how many workers use it."""
    with _HTTP.open(f"{url}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watch_stream_total "):
            return float(line.split()[1])
    return 0.0


def _move_leader(leader_url: str, target_id: str) -> None:
    """Hand leadership to the member ``target_id`` (etcd's MoveLeader, via the gateway)."""
    req = urllib.request.Request(
        f"{leader_url}/v3/maintenance/transfer-leadership",
        data=json.dumps({"targetID": target_id}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with _HTTP.open(req, timeout=5) as resp:
        resp.read()


def start_gaps(lines: list[checker.Line], job: str, lo: float, hi: float) -> float:
    """The longest time between two consecutive started runs of ``job`` in [lo, hi]."""
    at = sorted(e.at for e in lines if e.job == job and e.is_start and lo <= e.at <= hi)
    if len(at) < 2:
        return float("inf")
    return max(b - a for a, b in itertools.pairwise(at))


async def _frozen(o: Opts, n: int, name: str, *, leader: bool) -> Result:
    async with Rig(o.dir(f"{n}-frozen-{'leader' if leader else 'follower'}")) as rig:
        ttl = rig.lease_ttl
        await rig.put_jobs(*(rig.job(j) for j in JOBS))
        t0 = await rig.warm(*JOBS)
        await asyncio.sleep(2)
        lead = await asyncio.to_thread(rig.cluster.leader_index)
        assert lead is not None, "no etcd leader"
        members = rig.cluster.members
        # the member most workers are on (their watch streams): freeze it, as the
        # leader (moved there first) or as a follower
        streams = {
            i: await asyncio.to_thread(_watch_streams, m.client_url) for i, m in enumerate(members)
        }
        if leader:
            victim = max(streams, key=lambda i: streams[i])
            if victim != lead:
                target = await asyncio.to_thread(members[victim].member_id)
                await asyncio.to_thread(_move_leader, members[lead].client_url, target)
                await asyncio.to_thread(rig.cluster.wait_for_leader, 15, exclude=[lead])
                lead = victim
                await asyncio.sleep(1)
            assert await asyncio.to_thread(rig.cluster.leader_index) == victim
        else:
            victim = max((i for i in streams if i != lead), key=lambda i: streams[i])
        role = "leader" if leader else "follower"
        await _at_fraction(0.7)  # the next tick's claims (sent 0.25 s ahead) hit the frozen member
        f = rig.fault(f"SIGSTOP etcd {role} {members[victim].name} {FREEZE:.0f}s", settle=ttl)
        members[victim].pause()
        elected = None
        if leader:
            await asyncio.to_thread(rig.cluster.wait_for_leader, 15, exclude=[victim])
            elected = time.time() - f.start
        await asyncio.sleep(max(0.0, FREEZE - (time.time() - f.start)))
        members[victim].resume()
        rig.heal(f)
        await asyncio.sleep(o.hold / 2)
        t1 = time.time()
        await asyncio.sleep(1.5)
    lines = rig.lines()
    rep = checker.check(lines, window=(t0, t1), every_second=JOBS, faults=rig.faults)
    gap = max(start_gaps(lines, j, t0, t1) for j in JOBS)
    tick_gap = max(checker.gaps(lines, j, t0, t1) for j in JOBS)
    res = result(n, name, rig, rep, longest_gap_between_started_runs_at_most_3s=gap <= MAX_GAP)
    res.notes = {
        "longest_gap_s": round(gap, 2),
        "longest_tick_gap_s": round(tick_gap, 2),
        "victim": members[victim].name,
    }
    if elected is not None:
        res.notes["new_leader_after_s"] = round(elected, 2)
    res.notes["watch_streams_per_member"] = streams
    return res


# 11 ------------------------------------------------------------------------------


async def frozen_leader(o: Opts) -> Result:
    return await _frozen(o, 11, "frozen etcd leader", leader=True)


# 12 ------------------------------------------------------------------------------


async def frozen_follower(o: Opts) -> Result:
    return await _frozen(o, 12, "frozen etcd follower", leader=False)

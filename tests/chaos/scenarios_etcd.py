"""Scenarios 5-8: faults of etcd itself and of the network between a worker and etcd."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from proof import ledger as checker
from scheduler.etcd.client import EtcdError
from scheduler.model import JobSpec
from tests.chaos.rig import Rig
from tests.chaos.scenarios import Opts, Result, new_run_elsewhere, result, run_lines, started
from tests.support import wait_for
from workers.pace import MAX_CLAIM_AHEAD

ELECTION = 1.0  # etcd runs with --election-timeout 500 ms; an election takes up to 2x


async def _at_fraction(frac: float) -> None:
    """Sleep until the wall clock is ``frac`` of a second past a whole second."""
    now = time.time()
    await asyncio.sleep((frac - now % 1) % 1)


# 5 -------------------------------------------------------------------------------


async def leader_kill(o: Opts) -> Result:
    async with Rig(o.dir("5-leader-kill")) as rig:
        ttl = rig.lease_ttl
        jobs = ["j0", "j1"]
        await rig.put_jobs(*(rig.job(j) for j in jobs))
        t0 = await rig.warm(*jobs)
        await asyncio.sleep(2)
        lead = await asyncio.to_thread(rig.cluster.leader_index)
        assert lead is not None, "no etcd leader"
        await _at_fraction(0.05)  # ticks are being claimed right now
        f = rig.fault(f"SIGKILL etcd leader {rig.cluster.members[lead].name}", settle=ttl)
        await asyncio.to_thread(rig.cluster.members[lead].kill)
        await asyncio.to_thread(rig.cluster.wait_for_leader, 15, exclude=[lead])
        elected = time.time() - f.start
        await asyncio.sleep(o.hold / 2)
        await asyncio.to_thread(rig.cluster.members[lead].restart)
        rig.heal(f)
        await asyncio.sleep(o.hold / 2)
        t1 = time.time()
        await asyncio.sleep(1.5)
    lines = rig.lines()
    rep = checker.check(lines, window=(t0, t1), every_second=jobs, faults=rig.faults)
    gap = max(checker.gaps(lines, j, t0, t1) for j in jobs)
    res = result(
        5,
        "kill etcd leader",
        rig,
        rep,
        gap_within_election_plus_ttl=gap <= ELECTION + ttl,
    )
    res.checks.pop("0 misses outside fault windows")
    res.notes = {"new_leader_after_s": round(elected, 2), "longest_gap_s": round(gap, 2)}
    return res


# 6 -------------------------------------------------------------------------------


async def quorum_loss(o: Opts) -> Result:
    outage = 15.0 if o.short else 30.0
    async with Rig(o.dir("6-quorum-loss")) as rig:
        ttl = rig.lease_ttl
        catchup = rig.job("catchup", schedule="*/10 * * * * *", starting_deadline=60)
        nocatch = rig.job("nocatch", schedule="*/10 * * * * *", starting_deadline=2)
        await rig.put_jobs(rig.job("tick"), catchup, nocatch)
        t0 = await rig.warm("tick")
        victims = [m for i, m in enumerate(rig.cluster.members) if i != 0]
        # start the outage 1.5 s after a */10 tick, so no */10 claim is in flight
        # (a claim committed just before the outage may start its run at the tick)
        await asyncio.sleep((1.5 - time.time() % 10) % 10)
        f = rig.fault(f"stop 2 of 3 etcd members {outage:.0f}s+", settle=ttl + 4)
        await asyncio.gather(*(asyncio.to_thread(m.stop) for m in victims))
        # quorum is lost when the second member has exited, not when the fault
        # began: stopping a member takes a while, and claims commit until then
        quorum_lost = time.time()
        await asyncio.sleep(outage)
        now = time.time()
        await asyncio.sleep((2.0 - now % 10) % 10)  # restore 2 s after a */10 tick
        restore = time.time()
        for m in victims:
            m.start()
        await asyncio.to_thread(rig.cluster.wait_for_leader, 30)
        rig.heal(f)
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: _ran_after(rig, "tick", restore), timeout=30, interval=0.1)
        recovered = time.time() - restore
        alive = [w.config.worker.id for w in rig.workers if w.proc and w.proc.poll() is None]
        await asyncio.sleep(o.hold)
        t1 = time.time()
        records = {j: await rig.records(j) for j in ("tick", "catchup", "nocatch")}
        await asyncio.sleep(1.5)
    lines = rig.lines()
    unclaimed = [
        e.run_id
        for e in lines
        if e.is_start
        and e.at < t1 - 0.5  # started before the records were read
        and (
            e.run_id not in records[e.job]
            # a run still going when the records were read has no token in its record yet
            or records[e.job][e.run_id].fencing_token not in (0, e.token)
        )
    ]
    # a claim committed just before quorum was lost starts its run at its tick
    # (claims go out up to MAX_CLAIM_AHEAD before it, further when commits are
    # slow, as they are while members stop): allow that plus 0.5 s after the loss
    allowed = MAX_CLAIM_AHEAD + 0.5
    in_outage = [e for e in lines if e.is_start and quorum_lost + allowed < e.at < restore]

    def outage_ticks(job: str) -> list[float]:
        return sorted(
            e.tick for e in lines if e.job == job and e.is_start and f.start < e.tick < restore
        )

    latest = max(t for t in range(int(f.start), int(restore) + 1) if t % 10 == 0)
    rep = checker.check(lines, window=(t0, t1), every_second=["tick"], faults=rig.faults)
    res = result(
        6,
        "quorum loss",
        rig,
        rep,
        workers_survived=len(alive) == 3,
        no_run_without_a_claim=not unclaimed,
        no_start_during_outage=not in_outage,
        latest_missed_tick_ran_once=outage_ticks("catchup") == [latest],
        tick_past_deadline_not_run=not outage_ticks("nocatch"),
    )
    res.notes = {
        "outage_s": round(f.end - f.start, 1),
        "quorum_lost_after_s": round(quorum_lost - f.start, 2),
        "workers_alive_after": alive,
        "first_run_after_restore_s": round(recovered, 2),
        "catchup_outage_ticks": [checker.show_tick(t) for t in outage_ticks("catchup")],
        "latest_missed_tick": checker.show_tick(latest),
        "unclaimed_runs": unclaimed[:5],
    }
    return res


def _ran_after(rig: Rig, job: str, t: float) -> bool:
    return any(e.job == job and e.is_start and e.at > t for e in rig.lines())


# 7 -------------------------------------------------------------------------------


async def churn(o: Opts) -> Result:
    span = 12.0 if o.short else 30.0
    async with Rig(o.dir("7-restart-compact")) as rig:
        await rig.put_jobs(rig.job("tick"))
        t0 = await rig.warm("tick")
        f = rig.fault("rolling member restarts + compaction + job changes", settle=5)
        stop = asyncio.Event()
        stats = {"changes": 0, "compactions": 0, "restarts": 0, "failed_writes": 0}
        last = [0]

        async def change() -> None:
            rnd = random.Random(7)
            while not stop.is_set():
                name = f"cfg-{rnd.randrange(12)}"
                try:
                    if rnd.random() < 0.3:
                        await rig.etcd.delete(rig.ks.job(name))
                        last[0] = await rig.etcd.revision()
                    else:
                        env = {"V": str(rnd.random())}
                        spec = JobSpec(name=name, schedule="0 0 1 1 *", shell="true", env=env)
                        last[0] = await rig.put_jobs(spec)
                    stats["changes"] += 1
                    if stats["changes"] % 10 == 0:
                        await rig.etcd.compact(await rig.etcd.revision())
                        stats["compactions"] += 1
                except EtcdError:
                    stats["failed_writes"] += 1
                await asyncio.sleep(0.2)

        async def restart() -> None:
            i = 0
            while not stop.is_set():
                await asyncio.to_thread(rig.cluster.members[i % 3].restart)
                stats["restarts"] += 1
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

        tasks = [asyncio.create_task(change()), asyncio.create_task(restart())]
        await asyncio.sleep(span)
        stop.set()
        await asyncio.gather(*tasks)
        rig.heal(f)
        kvs, _ = await rig.etcd.get_prefix(rig.ks.jobs)
        want = len(kvs)

        async def converged() -> bool:
            regs = await rig.registrations()
            return len(regs) == 3 and all(
                r["jobs"] == want and r["revision"] >= last[0] for r in regs.values()
            )

        with contextlib.suppress(AssertionError):
            await wait_for(converged, timeout=20, interval=0.1)
        took = time.time() - f.end
        await asyncio.sleep(o.hold / 2)
        t1 = time.time()
        await asyncio.sleep(1.5)
    rep = checker.check(rig.lines(), window=(t0, t1), every_second=["tick"], faults=rig.faults)
    res = result(7, "restarts + compaction", rig, rep, tables_converged_within_5s=took <= 5.0)
    res.notes = stats | {"converged_after_s": round(took, 2), "jobs": want}
    return res


# 8 -------------------------------------------------------------------------------


async def partition(o: Opts) -> Result:
    async with Rig(o.dir("8-partition"), proxied=(0,), initial=1) as rig:
        ttl = rig.lease_ttl
        await rig.put_jobs(rig.job("long", beats=60), rig.job("tick"))
        wid, run = await started(rig, "long")
        await rig.start_workers(1, 2)
        t0 = await rig.warm("tick")
        await asyncio.sleep(1.0)
        f = rig.fault(f"cut {wid} off etcd {2 * ttl + 1}s", settle=2.0)
        await rig.proxies[0].cut(blackhole=True)
        await asyncio.sleep(2 * ttl + 1)
        await rig.proxies[0].restore()
        rig.heal(f)
        nxt = await new_run_elsewhere(rig, "long", f.start, wid, timeout=10)
        await asyncio.sleep(o.hold / 2)
        t1 = time.time()
        await asyncio.sleep(1.5)
    last = max(e.at for e in run_lines(rig, run))
    rep = checker.check(rig.lines(), window=(t0, t1), every_second=["tick"], faults=rig.faults)
    res = result(
        8,
        "partition worker from etcd",
        rig,
        rep,
        child_killed_before_lease_could_expire=last < f.start + ttl,
        next_run_started_after_the_old_one_died=nxt.at > last,
    )
    res.notes = {
        "child_last_line_after_cut_s": round(last - f.start, 2),
        "next_run_after_cut_s": round(nxt.at - f.start, 2),
    }
    return res

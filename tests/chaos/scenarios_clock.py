"""Scenarios 13-17: real clock faults (libfaketime) and stale or forged keys (I6, I7).

- 13 a worker whose clock is an hour ahead from its start;
- 14, 15 a running worker's clock stepped an hour forward, or back;
- 16 workers 0.7 s ahead and 0.7 s behind (inside a 1 s ``max_clock_skew``);
- 17 an orphan lock, a fence an hour ahead, 1,000 unleased registrations written
  straight into etcd.

The clock faults come from outside the worker process (:mod:`tests.chaos.faketime`);
the ledger's times are written by job children, which run with the true clock, so
"true time" below is the ledger's ``at``. Every scenario also checks that each tick
of its every-second jobs is accounted for (:func:`unaccounted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proof import ledger as checker
from scheduler.etcd.client import EtcdError, cmp_created, op_put
from scheduler.etcd.listwatch import EventKind, ListWatch, Snapshot
from scheduler.keyspace import decode_tick, encode_tick
from scheduler.model import JobSpec
from scheduler.runs import LockValue, RunStatus, from_ms, new_run_id
from tests.chaos.faketime import ClockRig, FakeTime, preloaded, probe_shell, read_probe
from tests.chaos.rig import PREFIX, Rig
from tests.chaos.scenarios import Opts, Result, result
from tests.support import wait_for

ACCOUNTED = (RunStatus.MISSED, RunStatus.SKIPPED)
HOUR = 3600.0


# helpers (reusable by other scenarios) ----------------------------------------------


def window_seconds(lo: float, hi: float) -> range:
    """The whole seconds the checker expects a start for (first and last excepted)."""
    return range(math.ceil(lo) + 1, math.floor(hi))


@dataclass
class Accounting:
    """What etcd's run records say about the expected ticks of every-second jobs."""

    missing: dict[str, list[str]] = field(default_factory=dict)
    """job -> expected ticks with neither a ledger start nor a missed/skipped record"""
    contradicted: dict[str, list[str]] = field(default_factory=dict)
    """job -> ticks that started (ledger) yet have a missed/skipped record"""


async def account(
    rig: Rig, lines: list[checker.Line], jobs: list[str], lo: float, hi: float
) -> Accounting:
    """Every tick accounted for (I6: every due tick that does not run leaves a record
    that says why): each expected tick of each every-second job in [lo, hi] has a
    ledger start or a run record saying ``missed`` or ``skipped``; and no record says
    so of a tick that ran. Read the records a little after ``hi``."""
    out = Accounting()
    for job in jobs:
        started = {round(e.tick) for e in lines if e.job == job and e.is_start}
        recorded = {
            round(r.tick.timestamp())
            for r in (await rig.records(job)).values()
            if r.status in ACCOUNTED
        }
        missing = [s for s in window_seconds(lo, hi) if s not in started | recorded]
        both = sorted(t for t in started & recorded if t <= hi)
        if missing:
            out.missing[job] = [checker.show_tick(t) for t in missing]
        if both:
            out.contradicted[job] = [checker.show_tick(t) for t in both]
    return out


def tick_gap(lines: list[checker.Line], job: str, lo: float, hi: float) -> float:
    """The longest time between started ticks of ``job`` over the expected seconds of
    [lo, hi], the window's ends included (1.0 when every second started, 2.0 when one
    tick was missed; a job that stopped before the end counts up to the end)."""
    started = {round(e.tick) for e in lines if e.job == job and e.is_start}
    longest = run = 0
    for sec in window_seconds(lo, hi):
        run = 0 if sec in started else run + 1
        longest = max(longest, run)
    return float(longest + 1)


def starts(
    lines: list[checker.Line], lo: float = -math.inf, hi: float = math.inf
) -> list[checker.Line]:
    """Start lines whose true start time is in [lo, hi]."""
    return [e for e in lines if e.is_start and lo <= e.at <= hi]


def per_worker(lines: list[checker.Line], lo: float, hi: float) -> dict[str, int]:
    return dict(sorted(Counter(e.worker for e in starts(lines, lo, hi)).items()))


def burst(lines: list[checker.Line], job: str, lo: float, hi: float) -> int:
    """The most starts of ``job`` within one second of true time (floor of ``at``)."""
    c = Counter(math.floor(e.at) for e in starts(lines, lo, hi) if e.job == job)
    return max(c.values(), default=0)


def lead(
    lines: list[checker.Line], lo: float = -math.inf, hi: float = math.inf
) -> tuple[float, float]:
    """(earliest, latest) start relative to its tick, by the true clock: a negative
    first value is a run started before its tick."""
    d = [e.at - e.tick for e in starts(lines, lo, hi)]
    return (min(d), max(d)) if d else (0.0, 0.0)


async def registration(rig: Rig, wid: str) -> dict[str, Any]:
    return (await rig.registrations()).get(wid, {})


async def published_offset(
    rig: Rig, wid: str, timeout: float = 8.0
) -> tuple[float, dict[str, Any]]:
    """``wid``'s published ``clock`` minus the true time, read when its registration
    is refreshed (so the reading is fresh to the poll interval, 50 ms)."""
    first = (await registration(rig, wid)).get("clock")

    async def fresh() -> tuple[float, dict[str, Any]] | None:
        reg = await registration(rig, wid)
        if reg.get("clock") not in (None, first):
            return float(reg["clock"]) - time.time(), reg
        return None

    found: tuple[float, dict[str, Any]] = await wait_for(
        fresh, timeout=timeout, interval=0.05, message=f"{wid} refreshes its registration"
    )
    return found


async def fences(rig: Rig, jobs: list[str]) -> dict[str, float]:
    """``ticks/<job>`` minus the true time, in seconds (positive: a fence ahead)."""
    out = {}
    now = time.time()
    for job in jobs:
        with contextlib.suppress(EtcdError, ValueError):
            kv, _ = await rig.etcd.get(rig.ks.tick(job))
            if kv is not None:
                out[job] = round(decode_tick(kv.value) / 1000 - now, 3)
    return out


class FenceWatch:
    """Watches ``ticks/`` while a scenario runs: how far ahead of the true time any
    fence ever was when written (an etcd watch, so a bad fence repaired within
    milliseconds is still seen). ``async with FenceWatch(rig) as fw: ... fw.worst``."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.worst: dict[str, float] = {}
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        prefix = self.rig.ks.ticks
        async for item in ListWatch(self.rig.etcd, prefix):
            now = time.time()
            if isinstance(item, Snapshot):
                kvs = list(item.kvs.values())
            else:
                kvs = [e.kv for e in item.events if e.kind is EventKind.PUT]
            for kv in kvs:
                self.events += 1
                with contextlib.suppress(ValueError):
                    ahead = decode_tick(kv.value) / 1000 - now
                    job = kv.key[len(prefix) :]
                    self.worst[job] = round(max(self.worst.get(job, -math.inf), ahead), 3)

    def most(self) -> float:
        return max(self.worst.values(), default=-math.inf)

    async def __aenter__(self) -> FenceWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, EtcdError):
            await self._task


def probe_job(rig: Rig, schedule: str = "*/2 * * * * *") -> JobSpec:
    """A job whose child writes its own environment's faketime variables and
    ``date`` (see :func:`tests.chaos.faketime.probe_shell`)."""
    return JobSpec(name="envprobe", schedule=schedule, shell=probe_shell(rig.dir / "probe"))


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def probe_leaks(rig: Rig) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Probe lines showing a child that inherited the fake: a faketime variable set
    in its environment, or a ``date`` more than 0.5 s off the true time of the write
    (the child's ``/proc/uptime`` mapped to the wall clock of this process, which
    libfaketime does not touch)."""
    lines = read_probe(rig.dir / "probe")
    base = time.time() - uptime()
    bad = []
    for p in lines:
        p["date_minus_true_s"] = round(float(p["date"]) - (base + float(p["uptime"])), 3)
        if (
            p["ld_preload"] != "-"
            or p["faketime"] != "-"
            or p["faketime_file"] != "-"
            or abs(p["date_minus_true_s"]) > 0.5
        ):
            bad.append(p)
    return bad, Counter(p["worker"] for p in lines)


async def faked_is_worker(
    rig: Rig, wid: str, want: float, tol: float
) -> tuple[bool, dict[str, Any]]:
    """Is the process whose clock is faked ``wid`` itself? Its registration's pid is
    the pid the rig started under libfaketime, and the clock it publishes is
    ``want`` seconds off the true time."""
    offset, reg = await published_offset(rig, wid)
    pid = rig.worker(wid).pid
    ok = reg.get("pid") == pid and preloaded(pid) and abs(offset - want) <= tol
    return ok, {
        "pid": pid,
        "registered_pid": reg.get("pid"),
        "published_offset_s": round(offset, 3),
    }


def skew_of(reg: dict[str, Any]) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return float(reg["skew"])
    return None


# 13 ------------------------------------------------------------------------------


async def clock_ahead(o: Opts) -> Result:
    """w0 starts with its clock an hour ahead and keeps it."""
    jobs = [f"s{i}" for i in range(3)]
    fake = {0: FakeTime.fixed("+1h")}
    async with (
        ClockRig(o.dir("13-clock-ahead"), fake=fake, initial=0) as rig,
        FenceWatch(rig) as fw,
    ):
        await rig.start_workers(1, 2)
        await rig.put_jobs(*(rig.job(j) for j in jobs), probe_job(rig))
        t0 = await rig.warm(*jobs)
        f = rig.fault("w0 clock +1h from its start")
        await rig.start_workers(0)
        registered = time.time()
        is_w0, who = await faked_is_worker(rig, "w0", HOUR, 5.0)
        _, w1_reg = await published_offset(rig, "w1")
        w1_offset = float(w1_reg["clock"]) - time.time()
        await asyncio.sleep(o.hold)
        t1 = time.time()
        reg0 = await registration(rig, "w0")
        ahead = await fences(rig, jobs)
        await asyncio.sleep(1.5)
        lines = rig.lines()
        acct = await account(rig, lines, jobs, t0, t1)
        rig.heal(f)
    rep = checker.check(lines, window=(t0, t1), every_second=jobs, faults=rig.faults)
    late_w0 = [e for e in starts(lines) if e.worker == "w0" and e.at > registered + 4.0]
    w0_runs = [e for e in starts(lines) if e.worker == "w0"]
    skew = skew_of(reg0)
    early, latest = lead(lines, t0, t1)
    leaks, _ = probe_leaks(rig)
    res = result(
        13,
        "worker clock +1 h",
        rig,
        rep,
        no_misses_inside_either=not rep.misses_inside,
        faked_process_is_w0=is_w0 and abs(w1_offset) < 1.0,
        no_run_on_w0_after_its_first_4s=not late_w0,
        w0_registration_clock_ok_false=reg0.get("clock_ok") is False,
        w0_registration_skew_near_plus_1h=skew is not None and abs(skew - HOUR) < 60,
        no_fence_ever_more_than_5s_ahead=fw.events > 0 and fw.most() <= 5.0,
        no_fence_more_than_5s_ahead_at_the_end=bool(ahead) and max(ahead.values()) <= 5.0,
        no_start_before_its_tick=early >= -0.05,
        every_tick_accounted=not acct.missing,
        no_tick_both_run_and_recorded_missed=not acct.contradicted,
        children_see_true_clock=not leaks,
    )
    res.notes = who | {
        "w1_published_offset_s": round(w1_offset, 3),
        "w0_skew": skew,
        "w0_clock_ok": reg0.get("clock_ok"),
        "w0_runs": len(w0_runs),
        "w0_runs_after_4s": len(late_w0),
        "w0_last_run_after_registration_s": round(
            max((e.at for e in w0_runs), default=registered) - registered, 2
        ),
        "fence_minus_true_time_s": ahead,
        "fence_most_ahead_when_written_s": fw.worst,
        "longest_tick_gap_s": max(tick_gap(lines, j, t0, t1) for j in jobs),
        "start_minus_tick_s": [round(early, 3), round(latest, 3)],
        "runs_per_worker": per_worker(lines, t0, t1),
        "unaccounted": {k: v[:5] for k, v in acct.missing.items()},
        "run_yet_recorded_missed": {k: v[:5] for k, v in acct.contradicted.items()},
        "probe_leaks": leaks[:3],
    }
    return res


# 14, 15 --------------------------------------------------------------------------


async def _clock_step(o: Opts, n: int, spec: str) -> Result:
    """w0 runs with a true clock (libfaketime, offset file "+0"), then its clock steps."""
    jobs = [f"s{i}" for i in range(3)]
    d = o.dir(f"{n}-clock-step-{'fwd' if spec.startswith('+') else 'back'}")
    d.mkdir(parents=True, exist_ok=True)
    fake = FakeTime.stepping(d / "w0.faketime")
    async with ClockRig(d, fake={0: fake}) as rig, FenceWatch(rig) as fw:
        await rig.put_jobs(*(rig.job(j) for j in jobs), probe_job(rig, "* * * * * *"))
        t0 = await rig.warm(*jobs)
        is_w0, who = await faked_is_worker(rig, "w0", 0.0, 1.0)
        ran_before = False  # a job and the env probe, on w0, before the step
        with contextlib.suppress(AssertionError):
            await wait_for(
                lambda: (
                    any(e.worker == "w0" and e.at > t0 for e in starts(rig.lines()))
                    and any(p["worker"] == "w0" for p in read_probe(rig.dir / "probe"))
                ),
                timeout=20,
                interval=0.1,
            )
            ran_before = True
        f = rig.fault(f"w0 clock step {spec}")
        fake.step(spec, f.start)
        flagged = math.inf
        with contextlib.suppress(AssertionError):
            await wait_for(
                lambda: _clock_flagged(rig, "w0"),
                timeout=10,
                interval=0.05,
                message="w0 clock_ok false",
            )
            flagged = time.time() - f.start
        after, _ = await published_offset(rig, "w0")
        await asyncio.sleep(max(0.0, f.start + o.hold - time.time()))
        t1 = time.time()
        reg0 = await registration(rig, "w0")
        ahead = await fences(rig, jobs)
        await asyncio.sleep(1.5)
        lines = rig.lines()
        acct = await account(rig, lines, jobs, t0, t1)
        rig.heal(f)
    step = f.start
    rep = checker.check(lines, window=(t0, t1), every_second=jobs, faults=rig.faults)
    gap = {j: round(tick_gap(lines, j, t0, t1), 2) for j in jobs}
    bursts = {j: burst(lines, j, t0, t1) for j in jobs}
    w0_after = [e for e in starts(lines) if e.worker == "w0" and e.at > step]
    late_w0 = [e for e in w0_after if e.at > step + 4.0]
    skew = skew_of(reg0)
    target = fake.offset
    early, latest = lead(lines, t0, t1)
    leaks, probes = probe_leaks(rig)
    res = result(
        n,
        f"clock step {spec[0]}1 h while running",
        rig,
        rep,
        faked_process_is_w0=is_w0,
        w0_ran_before_the_step=ran_before,
        longest_gap_at_most_2s=max(gap.values()) <= 2.0,
        no_catch_up_burst=max(bursts.values()) <= 1 and latest <= 1.5,
        no_start_before_its_tick=early >= -0.05,
        w0_stopped_claiming_within_4s=not late_w0,
        w0_says_clock_ok_false_within_6s=flagged <= 6.0,
        w0_skew_reflects_the_step=skew is not None and abs(skew - target) < 60,
        no_fence_ever_more_than_5s_ahead=fw.events > 0 and fw.most() <= 5.0,
        no_fence_more_than_5s_ahead_at_the_end=bool(ahead) and max(ahead.values()) <= 5.0,
        every_tick_accounted=not acct.missing,
        no_tick_both_run_and_recorded_missed=not acct.contradicted,
        children_see_true_clock=not leaks,
    )
    res.notes = who | {
        "published_offset_after_step_s": round(after, 2),
        "w0_skew": skew,
        "w0_clock_ok": reg0.get("clock_ok"),
        "clock_ok_false_after_s": None if flagged == math.inf else round(flagged, 2),
        "w0_starts_after_step": len(w0_after),
        "w0_last_start_after_step_s": round(max((e.at for e in w0_after), default=step) - step, 2),
        "longest_tick_gap_s": gap,
        "max_starts_in_one_second": bursts,
        "start_minus_tick_s": [round(early, 3), round(latest, 3)],
        "fence_minus_true_time_s": ahead,
        "fence_most_ahead_when_written_s": fw.worst,
        "runs_per_worker_before": per_worker(lines, t0, step),
        "runs_per_worker_after": per_worker(lines, step, t1),
        "probe_runs": dict(probes),
        "unaccounted": {k: v[:5] for k, v in acct.missing.items()},
        "run_yet_recorded_missed": {k: v[:5] for k, v in acct.contradicted.items()},
        "probe_leaks": leaks[:3],
    }
    return res


async def _clock_flagged(rig: Rig, wid: str) -> bool:
    return (await registration(rig, wid)).get("clock_ok") is False


async def clock_step_forward(o: Opts) -> Result:
    return await _clock_step(o, 14, "+1h")


async def clock_step_back(o: Opts) -> Result:
    return await _clock_step(o, 15, "-1h")


# 16 ------------------------------------------------------------------------------


async def skew_07(o: Opts) -> Result:
    """w0 0.7 s ahead, w1 0.7 s behind, w2 true; max_clock_skew 1 s, so all are healthy."""
    jobs = [f"s{i}" for i in range(6)]
    fake = {0: FakeTime.fixed("+0.7"), 1: FakeTime.fixed("-0.7")}
    bound = {i: {"max_clock_skew": 1.0} for i in range(3)}
    async with (
        ClockRig(o.dir("16-skew-0.7"), fake=fake, worker_opts=bound) as rig,
        FenceWatch(rig) as fw,
    ):
        await rig.put_jobs(*(rig.job(j) for j in jobs), probe_job(rig, "* * * * * *"))
        t0 = await rig.warm(*jobs)
        f = rig.fault("w0 +0.7 s, w1 -0.7 s (whole run)")
        w0_ok, w0 = await faked_is_worker(rig, "w0", 0.7, 0.15)
        w1_ok, w1 = await faked_is_worker(rig, "w1", -0.7, 0.15)
        w2_offset, _ = await published_offset(rig, "w2")
        await asyncio.sleep(max(0.0, t0 + o.hold - time.time()))
        t1 = time.time()
        regs = {w: await registration(rig, w) for w in ("w0", "w1", "w2")}
        await asyncio.sleep(1.5)
        lines = rig.lines()
        acct = await account(rig, lines, jobs, t0, t1)
        rig.heal(f)
    mine = [e for e in lines if e.job in jobs]
    rep = checker.check(mine, window=(t0, t1), every_second=jobs)
    counts = per_worker(mine, t0, t1)
    fair = sum(counts.values()) / 3
    early, latest = lead(mine, t0, t1)
    by_worker = {
        w: [round(e.at - e.tick, 3) for e in starts(mine, t0, t1) if e.worker == w]
        for w in ("w0", "w1", "w2")
    }
    leaks, probes = probe_leaks(rig)
    res = result(
        16,
        "±0.7 s skew, bound 1 s",
        rig,
        rep,
        faked_processes_are_w0_and_w1=w0_ok and w1_ok and abs(w2_offset) < 0.15,
        no_start_more_than_50ms_before_its_tick=early >= -0.05,
        runs_per_worker_within_1_5x_fair_share=len(counts) == 3
        and all(fair / 1.5 <= c <= fair * 1.5 for c in counts.values()),
        all_workers_clock_ok=all(r.get("clock_ok") is not False for r in regs.values()),
        every_tick_accounted=not acct.missing,
        no_tick_both_run_and_recorded_missed=not acct.contradicted,
        children_see_true_clock=not leaks and probes["w0"] > 0 and probes["w1"] > 0,
    )
    res.faults = ["w0 clock +0.7 s, w1 clock -0.7 s (libfaketime), max_clock_skew 1 s"]
    res.notes = {
        "w0": w0,
        "w1": w1,
        "w2_published_offset_s": round(w2_offset, 3),
        "skew": {w: skew_of(r) for w, r in regs.items()},
        "clock_ok": {w: r.get("clock_ok") for w, r in regs.items()},
        "runs_per_worker": counts,
        "fair_share": round(fair, 1),
        "fence_most_ahead_when_written_s": fw.worst,
        "start_minus_tick_s": [round(early, 3), round(latest, 3)],
        "median_start_minus_tick_s": {
            w: round(statistics.median(v), 3) if v else None for w, v in by_worker.items()
        },
        "probe_runs": dict(probes),
        "unaccounted": {k: v[:5] for k, v in acct.missing.items()},
        "run_yet_recorded_missed": {k: v[:5] for k, v in acct.contradicted.items()},
        "probe_leaks": leaks[:3],
    }
    return res


# 17 ------------------------------------------------------------------------------

FAKES = 1000
REPAIR_KINDS = ("fence", "lock", "worker")


def repairs_prefix(kind: str = "") -> str:
    return f"{PREFIX}/repairs/{kind + '/' if kind else ''}"


async def _put_orphan_lock(rig: Rig, job: str) -> tuple[bytes, float]:
    """Write ``lock/<job>`` without a lease while the job is not running (a CAS on
    the lock's absence, retried until the job's run of this second has ended)."""
    key = rig.ks.lock(job)
    now = time.time()
    tick = from_ms(int(now) * 1000)
    value = LockValue(worker="ghost", run_id=new_run_id(tick), tick=tick, lease=0).to_json()

    async def put() -> float | None:
        res = await rig.etcd.txn([cmp_created(key, 0)], [op_put(key, value)])
        return time.time() if res.succeeded else None

    at: float = await wait_for(put, timeout=10, interval=0.02, message=f"{key} free")
    return value, at


async def _put_fake_workers(rig: Rig, template: dict[str, Any]) -> float:
    batch = 100  # etcd's default --max-txn-ops is 128
    for lo in range(0, FAKES, batch):
        ops = []
        for i in range(lo, min(lo + batch, FAKES)):
            wid = f"fake-{i:04d}"
            ops.append(op_put(rig.ks.worker(wid), json.dumps(template | {"id": wid}).encode()))
        await rig.etcd.txn([], ops)
    return time.time()


def _repair_ok(rec: dict[str, Any], kind: str, key: str, bad: bytes) -> bool:
    if rec.get("kind") != kind or rec.get("key") != key or not rec.get("by") or "at" not in rec:
        return False
    value = rec.get("value")
    text = bad.decode()
    if isinstance(value, str):  # the worker may cut a long value (a registration) short
        return value.strip() == text.strip() or (len(value) >= 64 and text.startswith(value))
    with contextlib.suppress(ValueError):
        return bool(value == json.loads(text))
    return False


async def stale_keys(o: Opts) -> Result:
    """Forged keys written straight into etcd while three workers run."""
    jobs = ["a", "b", "c0", "c1", "c2"]
    others = ["c0", "c1", "c2"]
    async with Rig(o.dir("17-stale-keys")) as rig:
        await rig.put_jobs(*(rig.job(j) for j in jobs))
        t0 = await rig.warm(*jobs)
        template = (await rig.registrations())["w1"]
        f = rig.fault(f"orphan lock a, fence b +1h, {FAKES} unleased registrations", settle=1.0)
        bad_fence = encode_tick(int((time.time() + HOUR) * 1000))
        await rig.etcd.put(rig.ks.tick("b"), bad_fence)
        at_b = time.time()
        bad_lock, at_a = await _put_orphan_lock(rig, "a")
        at_w = await _put_fake_workers(rig, template)
        fixed: dict[str, float] = {}

        async def repaired() -> bool:
            now = time.time()
            if "lock" not in fixed:
                kv, _ = await rig.etcd.get(rig.ks.lock("a"))
                if kv is None or kv.value != bad_lock or kv.lease != 0:
                    fixed["lock"] = now - at_a
            if "fence" not in fixed:
                kv, _ = await rig.etcd.get(rig.ks.tick("b"))
                if kv is None or decode_tick(kv.value) / 1000 <= now + 5:
                    fixed["fence"] = now - at_b
            if "worker" not in fixed:
                left = await rig.etcd.count_prefix(rig.ks.worker("fake-"))
                if left == 0:
                    fixed["worker"] = now - at_w
            return len(fixed) == 3

        with contextlib.suppress(AssertionError):
            await wait_for(repaired, timeout=20, interval=0.1)
        rig.heal(f)  # the fault lasts while the forged keys are in etcd
        await asyncio.sleep(max(0.0, f.end + o.hold / 2 - time.time()))
        t1 = time.time()
        kvs, _ = await rig.etcd.get_prefix(repairs_prefix())
        left = await rig.etcd.count_prefix(rig.ks.worker("fake-"))
        await asyncio.sleep(1.5)
        lines = rig.lines()
        acct = await account(rig, lines, jobs, t0, t1)
    recs: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in REPAIR_KINDS}
    for kv in kvs:
        kind, _, name = kv.key[len(repairs_prefix()) :].partition("/")
        with contextlib.suppress(ValueError):
            recs.setdefault(kind, {})[name] = json.loads(kv.value)
    lock_rec = recs["lock"].get("a", {})
    fence_rec = recs["fence"].get("b", {})
    fake_recs = {k: v for k, v in recs["worker"].items() if k.startswith("fake-")}
    fake_ok = sum(
        _repair_ok(v, "worker", rig.ks.worker(k), json.dumps(template | {"id": k}).encode())
        for k, v in fake_recs.items()
    )

    def again(job: str, at: float) -> float:
        nxt = [e.at for e in starts(lines) if e.job == job and e.at > at]
        return round(min(nxt) - at, 2) if nxt else math.inf

    rep = checker.check(lines, window=(t0, t1), every_second=jobs, faults=rig.faults)
    gap = {j: round(tick_gap(lines, j, t0, t1), 2) for j in jobs}
    res = result(
        17,
        "stale and forged keys",
        rig,
        rep,
        a_ran_again_within_3s=again("a", at_a) <= 3.0,
        b_ran_again_within_3s=again("b", at_b) <= 3.0,
        other_jobs_gap_at_most_2s=all(gap[j] <= 2.0 for j in others),
        orphan_lock_deleted="lock" in fixed,
        fence_moved_back="fence" in fixed,
        fake_registrations_deleted=left == 0,
        lock_repair_recorded=_repair_ok(lock_rec, "lock", rig.ks.lock("a"), bad_lock),
        fence_repair_recorded=_repair_ok(fence_rec, "fence", rig.ks.tick("b"), bad_fence),
        worker_repairs_recorded=fake_ok == FAKES,
        every_tick_accounted=not acct.missing,
        no_tick_both_run_and_recorded_missed=not acct.contradicted,
    )
    res.notes = {
        "a_next_start_after_s": again("a", at_a),
        "b_next_start_after_s": again("b", at_b),
        "repaired_after_s": {k: round(v, 2) for k, v in fixed.items()},
        "fake_registrations_left": left,
        "repair_records": {k: len(v) for k, v in recs.items()},
        "worker_repair_records_ok": fake_ok,
        "lock_repair": lock_rec,
        "fence_repair": fence_rec,
        "worker_repair_sample": fake_recs.get("fake-0000", {}),
        "longest_tick_gap_s": gap,
        "writes_took_s": round(at_w - f.start, 2),
        "worker_repair_value_chars": len(str(fake_recs.get("fake-0000", {}).get("value", ""))),
        "runs_per_worker": per_worker(lines, t0, t1),
        "unaccounted": {k: v[:5] for k, v in acct.missing.items()},
        "run_yet_recorded_missed": {k: v[:5] for k, v in acct.contradicted.items()},
    }
    return res

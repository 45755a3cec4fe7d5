"""Hand-over: while commits are slow, a ``forbid`` run passes its lock to the next tick.

A ``forbid`` run costs two commits in turn: its release, then the next tick's
claim, which cannot commit before the release has. On a healthy etcd that is a
few milliseconds. When the leader's disk turns slow (commits of 0.3-1 s) the two
no longer fit into a one-second period, and every-second jobs lose ticks.

So while the worker's claims are slow (``Pace.slow``), a ``forbid`` run whose
next tick is near ends with one transaction that releases its lock *and* claims
that tick (``scheduler.etcd.claim_txn.release_and_claim``): the same worker runs the
next tick, and a run costs one commit. The next tick is "near" when it is due
within ``ahead`` (the claim lead time) or was due less than ``ahead`` ago
(while commits are slow, other workers wait that long before they record a
busy tick as skipped, ``workers.claiming``).

The hand-over is only tried when this worker could claim the tick anyway: the
job still exists, is ``forbid`` and not suspended, the worker is eligible (not
draining, clock within bounds, labels match), has room and a live session, and
the tick is not visibly taken. Load is not spread while commits are slow: a job
stays with the worker that holds it until commits are fast again (or a tick is
taken by another worker, when its run took longer than the hand-over window).
"""

from __future__ import annotations

from scheduler.model import JobSpec
from scheduler.runs import from_ms, tick_ms


def next_tick(job: JobSpec, run_tick_ms: int, now_ms: int, ahead_ms: int) -> int | None:
    """The tick a run of ``job`` (for ``run_tick_ms``) that ends at ``now_ms`` may
    hand its lock to, or None when no tick is within ``ahead_ms`` of now."""
    sched, zone = job.schedule_obj(), job.zone()
    cand = tick_ms(sched.next_after(from_ms(run_tick_ms), zone))
    if cand + ahead_ms < now_ms:  # past its window: the latest tick, or the next one
        last = sched.latest_at_or_before(from_ms(now_ms), zone)
        if last is not None and tick_ms(last) + ahead_ms >= now_ms:
            cand = tick_ms(last)
        else:
            cand = tick_ms(sched.next_after(from_ms(now_ms), zone))
    if abs(cand - now_ms) > ahead_ms:
        return None
    return cand

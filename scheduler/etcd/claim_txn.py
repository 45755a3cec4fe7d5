"""The claim transactions: claim, release, acquire and hand-over, at most one run
per (job, tick), fenced by etcd revisions.

(The worker's side, which decides when to claim, is ``workers/claiming.py``. What a
claim asks and answers is :mod:`scheduler.etcd.claim_request`, the fences
:mod:`scheduler.etcd.fences`; both are re-exported here.)

The claim is one transaction (``forbid`` shown; ``allow`` uses a per-run lock key,
so the lock compare always holds)::

    If(  Value(ticks/J) < T                 -- the tick fence: T not taken yet
     AND CreateRevision(lock/J) == 0 )      -- nobody runs J now
    Then(Put(ticks/J, T), Put(lock/J, me, lease=session), Put(runs/J/<run>, running))
    Else(Get(lock/J), Get(ticks/J), Get(runs/J/<run>))

- ``ticks/J`` only ever grows, so a tick is taken once whatever the clock skew or
  how fast the previous run finished (the lock alone cannot say "tick T was
  already taken"). A missing ``ticks/J`` fails a value compare; the claim is
  then retried with ``CreateRevision(ticks/J) == 0``.
- The revision of the winning transaction is the run's *fencing token*; the
  lock's mod revision equals it (and, for a claim, its create revision too).
- When the tick is free but the lock is held (``forbid``), exactly one worker
  records the tick as skipped, with the same fence in a second transaction.
- The transaction is sent once (no library retries). When its reply is lost the
  same transaction — same run id — is sent again: if the first one committed,
  the else branch shows our own run record and lock, and the claim is reported
  as won with the original token. A committed claim is never reported as lost.
- Release deletes the lock only if its mod revision is still our token, and
  writes the final run record in the same transaction.
- Hand-over (``forbid``, when the next tick is near: see ``workers.handover``):
  the release and the next tick's claim are one transaction, so a run costs one
  commit instead of two (a release, then a claim waiting for it)::

    If(  ModRevision(lock/J) == token       -- we still hold the lock
     AND Value(ticks/J) < T' )              -- the next tick is not taken
    Then(Put(ticks/J, T'), Put(lock/J, next run, lease=session),
         Put(runs/J/<run>, final), Put(runs/J/<next>, running))
    Else(Put(runs/J/<run>, final), Get(lock/J))

  The lock is overwritten, not deleted and created (etcd refuses a request that
  writes one key twice), so its create revision stays and its mod revision
  becomes the next run's fencing token: that is why tokens and releases go by
  the mod revision. A lost reply is resolved as for a claim: the else branch
  shows the lock holding the next run's value if the first attempt committed.

Manual runs use the request instead of the tick fence: the claim compares that
the request (``trigger/J/R``, written by a master) still exists and that no
claim has taken it (``taken/J/R`` was never created), and creates ``taken/J/R``,
so one request starts at most one run. Workers only read requests (docs/security.md):
the request expires with its lease, and the leader deletes ``taken`` keys whose
request is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.etcd.claim_request import Claim, ClaimRequest, Outcome
from scheduler.etcd.client import (
    NOT_EQUAL,
    EtcdAmbiguous,
    EtcdClient,
    EtcdUnavailable,
    KeyValue,
    TxnSender,
    cmp_created,
    cmp_mod,
    op_delete,
    op_get,
    op_put,
)
from scheduler.etcd.fences import Fence, TickFence, TriggerFence
from scheduler.keyspace import decode_tick

__all__ = [
    "Claim",
    "ClaimRequest",
    "Fence",
    "HandOver",
    "Handed",
    "Outcome",
    "TickFence",
    "TriggerFence",
    "acquire",
    "claim",
    "holds",
    "release",
    "release_and_claim",
]


def holds(lock: list[KeyValue], value: bytes) -> bool:
    """Is the lock (a failure branch's read of it) the one we wrote?

    Ownership is bytes equality with the value we wrote: a lock value that merely
    contains ours (another run's value with our run id or worker id inside, say)
    is someone else's. Every ownership check of this module goes through here.
    """
    return bool(lock) and lock[0].value == value


async def claim(
    client: TxnSender,
    req: ClaimRequest,
    *,
    deadline: float = 5.0,
    sleep: Callable[[float], object] | None = None,
) -> Claim:
    """Try to claim ``req.fence`` for one run. See the module docstring for the rules.

    Raises :class:`EtcdUnavailable` if etcd gave no definite answer within
    ``deadline`` seconds; the claim is then unknown and the caller must not run.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    txns = 0
    delay = 0.05
    lock_key = req.lock_key
    failure = [op_get(lock_key or req.record_key), *req.fence.checks(), op_get(req.record_key)]
    absent = (
        False  # compare the fence key's absence instead of its value (kept here, not in the fence)
    )
    while True:
        try:
            txns += 1
            lock_cmp = [cmp_created(lock_key, 0)] if lock_key else []
            lock_put = [op_put(lock_key, req.lock_value, lease=req.lease)] if lock_key else []
            res = await client.txn_once(
                [*req.fence.compares(absent), *lock_cmp],
                [*req.fence.ops(), *lock_put, op_put(req.record_key, req.record_value)],
                failure,
            )
            if res.succeeded:
                prev = res.responses[0]
                return Claim(
                    Outcome.WON,
                    token=res.revision,
                    txns=txns,
                    replaced=req.fence.replaced(prev),
                    replaced_revision=prev[0].mod_revision if prev else 0,
                )
            lock, *seen, record = res.responses
            if record:  # an earlier attempt of ours committed; its reply was lost
                if lock_key is None or holds(lock, req.lock_value):
                    token = record[0].create_revision if lock_key is None else lock[0].mod_revision
                    return Claim(Outcome.WON, token=token, txns=txns)
                return Claim(Outcome.BUSY, recorded=True, txns=txns)
            if req.fence.missing(seen, absent):
                absent = not absent
                continue
            if req.fence.taken(seen):
                last = decode_tick(seen[0][0].value) if isinstance(req.fence, TickFence) else None
                return Claim(Outcome.TAKEN, last_tick=last, txns=txns)
            if not lock or lock_key is None:
                continue  # the lock was released between our compare and now: try again
            holder = lock[0].value
            if req.skip_value is None:
                return Claim(Outcome.BUSY, holder=holder, txns=txns, lock=lock[0])
            txns += 1
            skip = await client.txn_once(
                [*req.fence.compares(absent), cmp_created(lock_key, 0, NOT_EQUAL)],
                [*req.fence.ops(), op_put(req.record_key, req.skip_value)],
                failure,
            )
            if skip.succeeded:
                prev = skip.responses[0]
                return Claim(
                    Outcome.BUSY,
                    holder=holder,
                    recorded=True,
                    txns=txns,
                    lock=lock[0],
                    replaced=req.fence.replaced(prev),
                    replaced_revision=prev[0].mod_revision if prev else 0,
                )
        except EtcdAmbiguous:
            if loop.time() + delay > give_up:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        if loop.time() > give_up:
            raise EtcdUnavailable("claim: no definite answer before the deadline")


async def release(
    client: TxnSender, lock_key: str, token: int, record_key: str, record_value: bytes
) -> bool:
    """Write the final run record and delete the lock if it is still ours.

    Returns True when the lock was ours (last written at ``token``) and is now gone.
    Sent once: on :class:`EtcdAmbiguous` the caller sends it again, which is
    safe (the record is the same; a lock no longer written at ``token`` is
    someone else's and stays).
    """
    res = await client.txn_once(
        [cmp_mod(lock_key, token)],
        [op_delete(lock_key), op_put(record_key, record_value)],
        [op_put(record_key, record_value)],
    )
    return res.succeeded


async def acquire(
    client: EtcdClient, lock_key: str, value: bytes, lease: int, *, deadline: float = 10.0
) -> tuple[int, bytes | None]:
    """Take a free lock (for ``replace`` after the old run is gone).

    Returns (token, None) when taken, or (0, holder value) when it is held.
    Idempotent for the same ``value`` (an earlier lost reply is recognised).
    Raises :class:`EtcdUnavailable` when etcd gave no definite answer within
    ``deadline`` seconds.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while True:
        try:
            res = await client.txn_once(
                [cmp_created(lock_key, 0)],
                [op_put(lock_key, value, lease=lease)],
                [op_get(lock_key)],
            )
        except EtcdAmbiguous:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(0.1)
            continue
        if res.succeeded:
            return res.revision, None
        (lock,) = res.responses
        if holds(lock, value):  # an earlier attempt took it; its reply was lost
            return lock[0].mod_revision, None
        if lock:
            return 0, lock[0].value
        if loop.time() > give_up:
            raise EtcdUnavailable("acquire: the lock came and went until the deadline")


@dataclass(frozen=True, slots=True)
class HandOver:
    """The next tick's claim, sent with the release of the run before it."""

    fence: TickFence
    lock_value: bytes
    lease: int
    record_key: str
    record_value: bytes


@dataclass(frozen=True, slots=True)
class Handed:
    """What :func:`release_and_claim` did."""

    released: bool
    """The lock was ours and is now the next run's, or gone."""
    token: int = 0
    """Non-zero: the next tick is claimed and this is its fencing token."""
    replaced: int | None = None
    replaced_revision: int = 0


async def release_and_claim(
    client: TxnSender,
    lock_key: str,
    token: int,
    record_key: str,
    record_value: bytes,
    nxt: HandOver,
) -> Handed:
    """Release our lock and claim the next tick with it, in one transaction.

    If the tick was taken meanwhile (a skip or missed record moved the fence)
    the plain release follows. Sent once per call like :func:`release`; a
    re-send of the same ``nxt`` after :class:`EtcdAmbiguous` recognises an
    earlier attempt that committed (the lock holds ``nxt.lock_value``).
    """
    fence = nxt.fence
    res = await client.txn_once(
        [cmp_mod(lock_key, token), *fence.compares()],
        [
            *fence.ops(),
            op_put(lock_key, nxt.lock_value, lease=nxt.lease),
            op_put(record_key, record_value),
            op_put(nxt.record_key, nxt.record_value),
        ],
        [op_put(record_key, record_value), op_get(lock_key)],
    )
    if res.succeeded:
        prev = res.responses[0]
        return Handed(
            True,
            token=res.revision,
            replaced=fence.replaced(prev),
            replaced_revision=prev[0].mod_revision if prev else 0,
        )
    lock = res.responses[1]
    if holds(lock, nxt.lock_value):  # an earlier attempt committed; its reply was lost
        return Handed(True, token=lock[0].mod_revision)
    if lock and lock[0].mod_revision == token:  # still ours: the tick was taken
        return Handed(await release(client, lock_key, token, record_key, record_value))
    return Handed(False)

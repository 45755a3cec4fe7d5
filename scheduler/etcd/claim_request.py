"""What a claim asks for (:class:`ClaimRequest`) and what it answers
(:class:`Outcome`, :class:`Claim`). The transaction that takes them is
:func:`scheduler.etcd.claim_txn.claim`; the fences are :mod:`scheduler.etcd.fences`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from scheduler.etcd.fences import Fence, TickFence, TriggerFence
from scheduler.etcd.txn import KeyValue

__all__ = ["Claim", "ClaimRequest", "Outcome"]


class Outcome(enum.Enum):
    WON = "won"
    """We hold the claim; ``token`` is the fencing token."""
    TAKEN = "taken"
    """Another worker (or an earlier claim) already took this tick or trigger."""
    BUSY = "busy"
    """The tick was free but the job is running; ``recorded`` says whether we wrote the skip."""


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Outcome
    token: int = 0
    holder: bytes | None = None
    recorded: bool = False
    last_tick: int | None = None
    txns: int = 0
    lock: KeyValue | None = None
    """BUSY: the lock that was held (to tell a live holder from an orphan)."""
    replaced: int | None = None
    """The tick fence value this claim moved on from, when it wrote the fence
    (WON, or BUSY with the skip recorded): the ticks in between were never
    claimed, and the caller records them (see ``workers.accounting``)."""
    replaced_revision: int = 0
    """The revision at which the replaced fence value had been written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    """One claim: the fence it takes, the lock it holds, the records it writes.

    Build it with a named constructor: :meth:`tick` (a scheduled run),
    :meth:`manual` (a manual run, fenced by its request) or :meth:`record_only`
    (the fence and a record, no lock: a missed tick).
    """

    fence: Fence
    lock_key: str | None
    """None: claim the fence only (no lock), e.g. to record a missed tick."""
    lock_value: bytes = b""
    lease: int = 0
    run_id: str
    record_key: str
    record_value: bytes
    skip_value: bytes | None = None
    """The run record to write when the lock is held (``forbid``); None: do not skip-record."""

    @classmethod
    def tick(
        cls,
        fence: TickFence,
        *,
        lock_key: str | None,
        lock_value: bytes,
        lease: int,
        run_id: str,
        record_key: str,
        record_value: bytes,
        skip_value: bytes | None = None,
    ) -> ClaimRequest:
        """A scheduled run of tick ``fence`` (``lock_key`` None: ``replace`` locks later)."""
        return cls(
            fence=fence,
            lock_key=lock_key,
            lock_value=lock_value,
            lease=lease,
            run_id=run_id,
            record_key=record_key,
            record_value=record_value,
            skip_value=skip_value,
        )

    @classmethod
    def manual(
        cls,
        fence: TriggerFence,
        *,
        lock_key: str | None,
        lock_value: bytes,
        lease: int,
        run_id: str,
        record_key: str,
        record_value: bytes,
        skip_value: bytes | None = None,
    ) -> ClaimRequest:
        """A manual run: creates ``taken/J/R`` for request ``fence`` (one run per request)."""
        return cls(
            fence=fence,
            lock_key=lock_key,
            lock_value=lock_value,
            lease=lease,
            run_id=run_id,
            record_key=record_key,
            record_value=record_value,
            skip_value=skip_value,
        )

    @classmethod
    def record_only(
        cls, fence: TickFence, *, run_id: str, record_key: str, record_value: bytes
    ) -> ClaimRequest:
        """Take tick ``fence`` to write a record (e.g. missed) with no lock and no run."""
        return cls(
            fence=fence,
            lock_key=None,
            run_id=run_id,
            record_key=record_key,
            record_value=record_value,
        )

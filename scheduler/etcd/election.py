"""Leader election: one key on a session lease, held by whoever created it.

Rules:

- The leader is whoever created ``key``: :meth:`Election.campaign` writes it
  with the session's lease in a create-only transaction
  (``CreateRevision == 0``); the others retry every ``retry`` seconds until the
  key vanishes (its holder resigned, or its lease ended).
- The key's value is the leader's *identity*, which must be unique per master:
  :func:`is_owner` (etcd's ``IsOwner`` pattern) is the compare that holds only
  while this identity still leads. Put it in every transaction that only the
  leader may commit, so a master that lost leadership never writes.
- :attr:`Election.is_leader` is set once a campaign wins and cleared by
  :meth:`resign`; whoever owns the session calls ``resign`` when it ends
  (the key goes with the lease in any case).
- Leadership never outlives the session: :meth:`campaign` gives up (returns
  False) when the session is lost, and :meth:`resign` deletes the key only
  under :func:`is_owner`, so it never removes a successor's key.
"""

from __future__ import annotations

import asyncio
import contextlib

from scheduler.etcd.client import (
    Cmp,
    EtcdClient,
    EtcdError,
    cmp_absent,
    cmp_value,
    op_delete,
    op_put,
)
from scheduler.etcd.session import Session


def is_owner(key: str, identity: str) -> Cmp:
    """The compare that holds while ``identity`` holds the election ``key``
    (false once the key is gone or held by another)."""
    return cmp_value(key, identity.encode())


class Election:
    def __init__(self, client: EtcdClient, key: str, identity: str, *, retry: float = 2.0) -> None:
        if retry <= 0:
            raise ValueError("election retry must be positive")
        self.client = client
        self.key = key
        self.identity = identity
        self.retry = retry
        self.is_leader = asyncio.Event()
        """Set while this identity leads (as far as this process knows)."""

    def owner(self) -> Cmp:
        """:func:`is_owner` for this election: add it to leader-only transactions."""
        return is_owner(self.key, self.identity)

    async def campaign(self, session: Session) -> bool:
        """Wait until we lead on ``session``: True once we do, False when the
        session was lost first. Raises :class:`EtcdError` from etcd."""
        while not session.lost.is_set():
            res = await self.client.txn(
                [cmp_absent(self.key)],
                [op_put(self.key, self.identity.encode(), lease=session.lease_id)],
            )
            if res.succeeded:
                self.is_leader.set()
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry):
                    await session.lost.wait()
        return False

    async def resign(self) -> None:
        """Stop leading: clear :attr:`is_leader` and delete the key if it is
        still ours (best effort: the key ends with the session's lease anyway)."""
        was = self.is_leader.is_set()
        self.is_leader.clear()
        if was:
            with contextlib.suppress(EtcdError):
                await self.client.txn([self.owner()], [op_delete(self.key)])

    async def leader(self) -> str | None:
        """The current leader's identity, None when nobody leads."""
        kv, _ = await self.client.get(self.key)
        return kv.value.decode(errors="replace") if kv is not None else None

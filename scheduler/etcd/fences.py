"""Fences: what makes a claim unique (see :mod:`scheduler.etcd.claim_txn`).

A :class:`TickFence` is the ``ticks/J`` key, which only ever grows: a claim of
tick T compares ``Value(ticks/J) < T`` (or, before the first claim, that the key
does not exist) and writes T. A :class:`TriggerFence` is a manual-run request: the
claim compares that the request ``trigger/J/R`` exists and ``taken/J/R`` does not,
and creates ``taken/J/R``. Fences are stateless; :func:`~scheduler.etcd.claim_txn.claim`
keeps which form of the tick compare it sends.
"""

from __future__ import annotations

from scheduler.etcd.txn import (
    GREATER,
    LESS,
    Cmp,
    KeyValue,
    Op,
    cmp_created,
    cmp_value,
    op_get,
    op_put,
)
from scheduler.keyspace import decode_tick, encode_tick

__all__ = ["Fence", "TickFence", "TriggerFence"]


class Fence:
    """What makes a claim unique: a tick, or a manual-run trigger."""

    def compares(self, absent: bool = False) -> list[Cmp]:
        """The claim's compares; ``absent``: the fence key does not exist yet.

        The fence is stateless: the caller (:func:`claim`) keeps ``absent``
        and flips it when :meth:`missing` says so.
        """
        raise NotImplementedError

    def ops(self) -> list[Op]:
        raise NotImplementedError

    def checks(self) -> list[Op]:
        """What the failure branch reads, to tell why the compare failed."""
        raise NotImplementedError

    def taken(self, seen: list[list[KeyValue]]) -> bool:
        """Someone else took it (or it is gone): ``seen`` holds one result per check."""
        raise NotImplementedError

    def missing(self, seen: list[list[KeyValue]], absent: bool) -> bool:
        """True when the compares made with ``absent`` cannot hold and ``absent`` must flip."""
        return False

    def replaced(self, written: list[KeyValue]) -> int | None:
        """The tick the fence held before our write (from the put's ``prev_kv``)."""
        return None


class TickFence(Fence):
    def __init__(self, key: str, tick_ms: int) -> None:
        self.key = key
        self.tick_ms = tick_ms
        self.value = encode_tick(tick_ms)

    def compares(self, absent: bool = False) -> list[Cmp]:
        if absent:
            return [cmp_created(self.key, 0)]
        return [cmp_value(self.key, self.value, LESS)]

    def ops(self) -> list[Op]:
        return [op_put(self.key, self.value, prev_kv=True)]

    def checks(self) -> list[Op]:
        return [op_get(self.key)]

    def taken(self, seen: list[list[KeyValue]]) -> bool:
        (fence,) = seen
        return bool(fence) and fence[0].value >= self.value

    def replaced(self, written: list[KeyValue]) -> int | None:
        try:
            return decode_tick(written[0].value) if written else None
        except ValueError:
            return None

    def missing(self, seen: list[list[KeyValue]], absent: bool) -> bool:
        # no fence key while comparing its value, or one while comparing its absence
        (fence,) = seen
        return bool(fence) == absent


class TriggerFence(Fence):
    """A manual-run request: the claim creates its ``taken`` key, while the request lives."""

    def __init__(self, key: str, taken_key: str, value: bytes = b"") -> None:
        self.key = key
        self.taken_key = taken_key
        self.value = value
        """What the ``taken`` key says (the run id), for people reading etcd."""

    def compares(self, absent: bool = False) -> list[Cmp]:
        return [cmp_created(self.key, 0, GREATER), cmp_created(self.taken_key, 0)]

    def ops(self) -> list[Op]:
        return [op_put(self.taken_key, self.value)]

    def checks(self) -> list[Op]:
        return [op_get(self.taken_key), op_get(self.key)]

    def taken(self, seen: list[list[KeyValue]]) -> bool:
        taken, request = seen
        return bool(taken) or not request  # taken by a claim, or expired before any

"""Transaction building blocks: what a key read looks like (:class:`KeyValue`), what a
transaction returns (:class:`TxnResult`), and the only constructors of compares and
ops (``cmp_*``, ``op_*``). Callers outside ``scheduler.etcd`` build transactions with
these and never touch the client library's request types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from etcd3aio import prefix_range_end
from etcd3aio._protobuf import Compare, RangeRequest, RequestOp
from etcd3aio.kv import KVService

__all__ = [
    "EQUAL",
    "GREATER",
    "LESS",
    "NOT_EQUAL",
    "Cmp",
    "KeyValue",
    "Op",
    "TxnResult",
    "TxnSender",
    "cmp_absent",
    "cmp_created",
    "cmp_mod",
    "cmp_unchanged",
    "cmp_value",
    "op_delete",
    "op_delete_range",
    "op_get",
    "op_newest",
    "op_put",
    "txn_result",
]

Op = Any  # an etcd RequestOp; built only with the helpers below
Cmp = Any  # an etcd Compare; built only with the helpers below


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KeyValue:
        return cls(
            key=kv.key.decode("utf-8", "replace"),
            value=bytes(kv.value),
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[list[KeyValue]]
    """For each op of the branch that ran: the keys a Range op returned, the
    previous key of a Put asked for it (``prev_kv``, [] if there was none), []
    for other writes."""


def txn_result(resp: Any, revision: int) -> TxnResult:
    responses: list[list[KeyValue]] = []
    for r in resp.responses:
        kind = r.WhichOneof("response")
        if kind == "response_range":
            responses.append([KeyValue.from_pb(kv) for kv in r.response_range.kvs])
        elif kind == "response_put" and r.response_put.HasField("prev_kv"):
            responses.append([KeyValue.from_pb(r.response_put.prev_kv)])
        else:
            responses.append([])
    return TxnResult(bool(resp.succeeded), revision, responses)


class TxnSender(Protocol):
    """What claims and releases are sent through: an :class:`EtcdClient`, or a
    ``scheduler.etcd.batch.TxnBatcher`` that shares requests between callers."""

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult: ...


# Transaction building blocks ----------------------------------------------

LESS = 2  # etcd Compare.CompareResult values
EQUAL = 0
GREATER = 1
NOT_EQUAL = 3


def cmp_created(key: str, revision: int, result: int = EQUAL) -> Cmp:
    """Compare a key's create revision (0 means: the key does not exist)."""
    return KVService.txn_compare_create_revision(key, revision, result=result)


def cmp_mod(key: str, revision: int, result: int = EQUAL) -> Cmp:

    return Compare(result=result, target=Compare.MOD, key=key.encode(), mod_revision=revision)


def cmp_absent(key: str) -> Cmp:
    """The key does not exist (create-only writes)."""
    return cmp_created(key, 0)


def cmp_unchanged(kv: KeyValue) -> Cmp:
    """The key is still as read: same mod revision (compare-and-swap, guarded delete)."""
    return cmp_mod(kv.key, kv.mod_revision)


def cmp_value(key: str, value: bytes, result: int = EQUAL) -> Cmp:
    """Compare a key's value; always false when the key does not exist."""
    return KVService.txn_compare_value(key, value, result=result)


def op_put(key: str, value: bytes, lease: int = 0, *, prev_kv: bool = False) -> Op:
    """A put; with ``prev_kv`` its response holds the value it replaced."""
    return KVService.txn_op_put(key, value, lease=lease, prev_kv=prev_kv)


def op_get(key: str) -> Op:
    return KVService.txn_op_get(key)


def op_newest(prefix: str, limit: int) -> Op:
    """A range read of the last ``limit`` keys under ``prefix``, in descending key order."""
    return RequestOp(
        request_range=RangeRequest(
            key=prefix.encode(),
            range_end=prefix_range_end(prefix),
            limit=limit,
            sort_order=RangeRequest.DESCEND,
            sort_target=RangeRequest.KEY,
        )
    )


def op_delete(key: str, *, prefix: bool = False) -> Op:
    return KVService.txn_op_delete(key, range_end=prefix_range_end(key) if prefix else None)


def op_delete_range(start: str, end: str) -> Op:
    """Delete every key in ``[start, end)``."""
    return KVService.txn_op_delete(start, range_end=end)

"""Prometheus metrics shared by masters and workers (``docs/operations.md`` lists them).

Rules:

- Every process (each master, each :class:`workers.worker.Worker`) has its own
  :class:`prometheus_client.CollectorRegistry`; nothing is registered in the
  library's global default registry, so several workers in one process (the
  tests) never collide.
- Labels come from small fixed sets (an etcd operation, a run status, a
  reason) or from the names of the jobs in the job table: never a run id, a
  key or a message.
- Recording is cheap (a dictionary update or a histogram bucket); values that
  are state (a gauge: the session lease, the clock skew) are read when
  ``/metrics`` is scraped, not kept up to date by the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# no ``*_created`` series: they would double the output for nothing
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text format every Prometheus version reads (what ``generate_latest`` writes)."""

ETCD_OPS = (
    "txn",
    "get",
    "list",
    "count",
    "put",
    "delete",
    "compact",
    "status",
    "alarm",
    "lease",
    "keepalive",
    "auth",
    "other",
)
"""The ``op`` label of the etcd request metrics."""

_OP_OF_CALL = {
    "txn": "txn",
    "get": "get",
    "read": "get",  # "read revision"
    "list": "list",
    "count": "count",
    "put": "put",
    "delete": "delete",
    "compact": "compact",
    "status": "status",
    "alarms": "alarm",
    "disarm": "alarm",
    "lease": "lease",
    "keepalive": "keepalive",
    "authenticate": "auth",
}

ETCD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Observer = Callable[[str, float, bool], None]
"""``(what, seconds, ok)``: one etcd request ended (``EtcdClient.observe``)."""


def etcd_op(what: str) -> str:
    """The ``op`` label of an etcd call described as ``what`` ("get /cron/x", "txn")."""
    return _OP_OF_CALL.get(what.split(" ", 1)[0], "other")


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=False)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (``CONTENT_TYPE``)."""
    return generate_latest(registry)


class EtcdMetrics:
    """``etcron_etcd_request_duration_seconds{op}`` and ``etcron_etcd_request_errors_total{op}``.

    A request is timed from its first send to its answer, retries on another
    member included; one that ends in an error counts once in the errors.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "etcron_etcd_request_duration_seconds",
            "etcd requests by operation, from the first send to the answer (retries included)",
            ["op"],
            buckets=ETCD_BUCKETS,
            registry=registry,
        )
        errors = Counter(
            "etcron_etcd_request_errors_total",
            "etcd requests that ended in an error (after their retries), by operation",
            ["op"],
            registry=registry,
        )
        self._errors = {op: errors.labels(op) for op in ETCD_OPS}
        self._duration: dict[str, Histogram] = {}

    def observe(self, what: str, seconds: float, ok: bool) -> None:
        op = etcd_op(what)
        child = self._duration.get(op)
        if child is None:
            child = self._duration[op] = self.duration.labels(op)
        child.observe(seconds)
        if not ok:
            self._errors[op].inc()

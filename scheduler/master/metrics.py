"""The master's Prometheus metrics and ``GET /metrics`` (``docs/operations.md``).

Rules:

- :class:`MetricsMiddleware` wraps the API's ASGI app (``scheduler.master.server``):
  it answers ``GET /metrics`` itself and times every other HTTP request, labelled
  by the route *template* (``/v1/jobs/{name}``, never the job's name), the
  method and the status code; a path no route matches is ``route="unmatched"``.
- ``/metrics`` needs no token unless ``master.metrics_token`` is set; then it
  needs ``Authorization: Bearer <metrics_token>`` (compared in constant time),
  else 401. The API token is not accepted there (a scraper should not hold it).
- What is state in etcd (the database size, the number of jobs) is read when
  ``/metrics`` is scraped, within ``REFRESH_TIMEOUT``; if etcd does not answer,
  ``etcron_etcd_up`` is 0 and the last values known stay.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.config import MasterConfig
from scheduler.etcd.client import EtcdAuthError, EtcdClient, EtcdError
from scheduler.keyspace import Keyspace
from scheduler.metrics import CONTENT_TYPE, EtcdMetrics, new_registry, render

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

REFRESH_TIMEOUT = 2.0
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class MasterMetrics:
    def __init__(self, client: EtcdClient, ks: Keyspace, config: MasterConfig) -> None:
        self.client = client
        self.ks = ks
        self.quota = config.etcd_quota_bytes
        self.registry = new_registry()
        self.etcd = EtcdMetrics(self.registry)
        r = self.registry
        self.requests = Counter(
            "etcron_api_requests_total",
            "API requests by route template, method and status code",
            ["route", "method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "etcron_api_request_duration_seconds",
            "API request durations by route template",
            ["route"],
            buckets=API_BUCKETS,
            registry=r,
        )
        sweeps = Counter(
            "etcron_housekeeping_sweeps_total",
            "Housekeeping sweeps of this master (as leader), by result (ok, error)",
            ["result"],
            registry=r,
        )
        self._sweeps = {result: sweeps.labels(result) for result in ("ok", "error")}
        self.sweep_duration = Histogram(
            "etcron_housekeeping_sweep_duration_seconds",
            "Duration of the housekeeping sweeps that completed",
            buckets=SWEEP_BUCKETS,
            registry=r,
        )
        self.marked_lost = Counter(
            "etcron_housekeeping_runs_marked_lost_total",
            "Runs still running on a dead lease that housekeeping recorded as lost",
            registry=r,
        )
        self.deleted = Counter(
            "etcron_housekeeping_runs_deleted_total",
            "Run records (and their output) deleted by retention",
            registry=r,
        )
        self.output_dropped = Counter(
            "etcron_housekeeping_output_dropped_total",
            "Runs whose stored output the output budget deleted (their records stay)",
            registry=r,
        )
        self.notifications = Counter(
            "etcron_notifications_total",
            "Notification outcomes by sink kind (webhook, slack, email) and outcome "
            "(delivered, failed, retried, rate_limited, dropped)",
            ["sink_kind", "outcome"],
            registry=r,
        )
        self.did_not_run = Counter(
            "etcron_did_not_run_total",
            "Ticks the did-not-run detector recorded missed (no record by their deadline)",
            ["job"],
            registry=r,
        )
        self.leader: asyncio.Event | None = None
        """``Housekeeper.is_leader`` once housekeeping runs (``etcron_master_leader``)."""
        self.etcd_up = False
        self.db_size: int | None = None
        self.jobs: int | None = None
        self.nospace: bool | None = None
        """etcd's NOSPACE alarm is raised (None: the alarms cannot be read)."""
        r.register(_State(self))

    def sweep_done(self, report: Any, seconds: float) -> None:
        """A sweep ended: ``report`` (a ``SweepReport``), or None when it failed."""
        if report is None:
            self._sweeps["error"].inc()
            return
        self._sweeps["ok"].inc()
        self.sweep_duration.observe(seconds)
        self.marked_lost.inc(report.marked_lost)
        self.deleted.inc(report.deleted)
        self.output_dropped.inc(report.output_dropped)

    def notified(self, sink_kind: str, outcome: str) -> None:
        self.notifications.labels(sink_kind, outcome).inc()

    def missed(self, job: str, n: int) -> None:
        self.did_not_run.labels(job).inc(n)

    def request_done(self, route: str, method: str, code: int, seconds: float) -> None:
        self.requests.labels(route, method if method in METHODS else "other", str(code)).inc()
        self.request_duration.labels(route).observe(seconds)

    async def refresh(self) -> None:
        """Read the database size and the number of jobs from etcd."""
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                status = await self.client.status()
                self.db_size = status["db_size"]
                self.jobs = await self.client.count_prefix(self.ks.jobs)
                try:
                    self.nospace = "NOSPACE" in await self.client.alarms()
                except EtcdAuthError:  # the master's etcd user may not read them
                    self.nospace = None
            self.etcd_up = True
        except (EtcdError, TimeoutError):
            self.etcd_up = False

    async def render(self) -> bytes:
        await self.refresh()
        return render(self.registry)


class _State(Collector):
    def __init__(self, metrics: MasterMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        leader = m.leader is not None and m.leader.is_set()
        yield GaugeMetricFamily(
            "etcron_master_leader", "1 while this master leads housekeeping", value=float(leader)
        )
        yield GaugeMetricFamily(
            "etcron_etcd_up",
            "1 when etcd answered this scrape's status and count requests",
            value=float(m.etcd_up),
        )
        if m.db_size is not None:
            yield GaugeMetricFamily(
                "etcron_etcd_db_size_bytes",
                "etcd database size (of the member that answered)",
                value=m.db_size,
            )
        yield GaugeMetricFamily(
            "etcron_etcd_quota_bytes",
            "etcd's backend quota, as configured (master.etcd_quota_bytes)",
            value=m.quota,
        )
        if m.nospace is not None:
            yield GaugeMetricFamily(
                "etcron_etcd_nospace_alarm",
                "1 while etcd's NOSPACE alarm is raised: etcd refuses every write",
                value=float(m.nospace),
            )
        if m.jobs is not None:
            yield GaugeMetricFamily("etcron_jobs", "Job definitions in etcd", value=m.jobs)


class MetricsMiddleware:
    """ASGI: answers ``/metrics``; times and counts every other HTTP request."""

    def __init__(self, app: App, metrics: MasterMetrics, *, token: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            await self._serve_metrics(scope, send)
            return
        started = time.perf_counter()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_done(route, scope["method"], code, time.perf_counter() - started)

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if scope["method"] not in ("GET", "HEAD"):
            status, ctype, body = 405, b"text/plain", b"only GET and HEAD\n"
            headers.append((b"allow", b"GET, HEAD"))
        elif self.token is not None and not self._authorized(scope):
            status, ctype, body = 401, b"text/plain", b"missing or wrong bearer token\n"
            headers.append((b"www-authenticate", b"Bearer"))
        else:
            status, ctype, body = 200, CONTENT_TYPE.encode(), await self.metrics.render()
        headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        given = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, credentials = bytes(value).partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
        return hmac.compare_digest(given, self.token)

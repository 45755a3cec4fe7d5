"""Run every doctor check, each within its timeout, the whole within a bound.

The doctor talks to etcd directly, with the config's ``etcd`` section (as the
daemons do), not through a master's API: it must work when every master is
down, and it checks what the API hides (each endpoint on its own, leases,
locks). Its etcd user needs read access under the prefix; reading the alarms
may need more (``root`` with etcd auth): without it that check is a WARN.

Order: the config; every endpoint at once (reachable, leader, a linearizable
read, auth; TLS certificate expiry when ``etcd.ca_file`` is set); then, on a
client over the endpoints that answered, the cluster checks of
:mod:`scheduler.doctor.checks` one after the other. When no endpoint answers a
read, the cluster checks are not run and the exit code is 3.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from scheduler.clock import Clock
from scheduler.config import Config, ConfigError
from scheduler.doctor import checks
from scheduler.doctor.report import Check, Report, fail, ok, warn
from scheduler.doctor.tls import WARN_DAYS, CertExpiry, days_left, server_certificate
from scheduler.etcd.client import EtcdClient, EtcdError
from scheduler.etcd.connect import preflight
from scheduler.etcd.probe import EndpointHealth, probe_endpoint
from scheduler.keyspace import Keyspace
from scheduler.notify.deliveries import recent
from scheduler.store import JobStore

DEFAULT_TIMEOUT = 5.0
"""Seconds one check may take (one endpoint, one cluster check)."""
DEFAULT_BOUND = 60.0
"""Seconds the whole run may take; checks not done by then are FAIL."""


class Doctor:
    def __init__(
        self,
        cfg: Config,
        *,
        source: str = "defaults",
        timeout: float = DEFAULT_TIMEOUT,
        bound: float = DEFAULT_BOUND,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.timeout = timeout
        self.clock = clock or Clock()
        self.deadline = time.monotonic() + bound
        self.bound = bound
        self.report = Report()

    def _left(self) -> float:
        return min(self.timeout, self.deadline - time.monotonic())

    async def run(self) -> Report:
        if not self._config():
            return self.report
        healths = await self._endpoints()
        readable = [h.endpoint for h in healths if h.readable]
        if not readable:
            self.report.unreachable = True
            self.report.add(fail("cluster", "no endpoint answered a read: nothing else checked"))
            return self.report
        client = await self._cluster_client(readable)
        if client is None:
            return self.report
        try:
            await self._cluster(client, healths)
        finally:
            await client.close()
        return self.report

    # config --------------------------------------------------------------------

    def _config(self) -> bool:
        etcd = self.cfg.etcd
        try:
            preflight(etcd)
            Keyspace(etcd.prefix)
        except (ConfigError, ValueError) as exc:
            self.report.invalid_config = True
            self.report.add(fail("config", f"{self.source}: {exc}"))
            return False
        tls = "TLS" if etcd.ca_file else "plain TCP"
        user = f", user {etcd.username}" if etcd.username else ""
        self.report.add(
            ok(
                "config",
                f"{self.source}: valid; {len(etcd.endpoints)} etcd endpoint(s) "
                f"({tls}{user}), prefix {etcd.prefix}",
            )
        )
        return True

    # endpoints --------------------------------------------------------------------

    async def _endpoints(self) -> list[EndpointHealth]:
        etcd = self.cfg.etcd
        t = self._left()
        endpoints = list(etcd.endpoints)
        probes = asyncio.gather(*(probe_endpoint(etcd, e, t) for e in endpoints))
        tls = asyncio.gather(*(self._cert(e, t) for e in (endpoints if etcd.ca_file else [])))
        healths, certs = await asyncio.gather(probes, tls)  # all endpoints at once
        for h in healths:
            self.report.add(_endpoint_check(h))
        for endpoint, cert in zip(endpoints if certs else [], certs, strict=True):
            self.report.add(_cert_check(endpoint, cert, self.clock.time()))
        if any(h.reachable for h in healths):
            self.report.add(_auth_check(self.cfg.etcd.username, healths))
        return healths

    async def _cert(self, endpoint: str, t: float) -> CertExpiry | None:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(server_certificate, self.cfg.etcd, endpoint, t), t * 2
            )
        except TimeoutError:
            return None

    # the cluster ----------------------------------------------------------------

    async def _cluster_client(self, endpoints: list[str]) -> EtcdClient | None:
        t = self._left()
        one = self.cfg.etcd.model_copy(
            update={"endpoints": endpoints, "connect_timeout": t, "request_timeout": t}
        )
        try:
            async with asyncio.timeout(max(t, 0.001)):
                return await EtcdClient.connect(one)
        except (EtcdError, OSError, TimeoutError) as exc:
            self.report.unreachable = True
            self.report.add(fail("cluster", f"cannot connect: {str(exc)[:300] or 'no answer'}"))
            return None

    async def _cluster(self, client: EtcdClient, healths: list[EndpointHealth]) -> None:
        ks = Keyspace(self.cfg.etcd.prefix)
        store = JobStore(client, ks)
        sizes = [h.db_size for h in healths if h.reachable and h.db_size]
        self.report.add(checks.space_check(max(sizes) if sizes else None, self._quota()))
        self.report.add(_alarms(healths))
        workers: list[dict[str, Any]] | None = None

        async def read_workers() -> list[Check]:
            nonlocal workers
            workers = await store.list_workers()
            now = self.clock.time()
            max_skew = self.cfg.worker.max_clock_skew
            return [
                checks.workers_check(workers),
                *(checks.clock_check(w, max_skew, now) for w in workers),
            ]

        await self._bounded("workers", read_workers)
        if workers is None:
            for name in ("versions", "locks", "jobs"):
                self.report.add(fail(name, "not checked: the worker registrations were not read"))
        else:
            live: list[dict[str, Any]] = workers

            async def versions() -> list[Check]:
                return [checks.versions_check(live, await _masters(client, ks))]

            async def locks() -> list[Check]:
                return [await checks.lock_check(client, ks, live)]

            async def jobs() -> list[Check]:
                specs, bad, _ = await store.list_jobs()
                return [checks.selectors_check(specs, bad, live)]

            await self._bounded("versions", versions)
            await self._bounded("locks", locks)
            await self._bounded("jobs", jobs)

        async def notifications() -> list[Check]:
            found, _ = await recent(client, ks, None, 1000)
            return [checks.notifications_check(found)]

        await self._bounded("notifications", notifications)

    def _quota(self) -> int:
        return int(self.cfg.master.etcd_quota_bytes)

    async def _bounded(self, name: str, fn: Callable[[], Awaitable[list[Check]]]) -> None:
        t = self._left()
        if t <= 0:
            self.report.add(fail(name, f"not run: the run's bound ({self.bound:g}s) was reached"))
            return
        try:
            async with asyncio.timeout(t):
                self.report.add(*await fn())
        except TimeoutError:
            self.report.add(fail(name, f"no answer from etcd within {t:.1f}s"))
        except EtcdError as exc:
            self.report.add(fail(name, f"etcd: {str(exc)[:300]}"))


async def _masters(client: EtcdClient, ks: Keyspace) -> list[dict[str, Any]]:
    kvs, _ = await client.get_prefix(ks.masters)
    out = []
    for kv in kvs:
        if not kv.lease:
            continue
        try:
            data = json.loads(kv.value)
        except ValueError:
            continue
        if isinstance(data, dict):
            data.setdefault("id", Keyspace.tail(kv.key, ks.masters))
            out.append(data)
    return out


def _endpoint_check(h: EndpointHealth) -> Check:
    name = f"endpoint {h.endpoint}"
    ms = f"{h.seconds * 1000:.0f} ms"
    if not h.reachable:
        return fail(name, f"unreachable: {h.error} ({ms})")
    if h.authenticated is False:
        return fail(name, f"reachable, but {h.error}")
    if h.leader == 0 and not h.readable:
        return fail(name, f"reachable, no leader known: {h.error or 'no quorum'} ({ms})")
    if not h.readable:
        return fail(name, f"reachable, leader {h.leader:x}, but {h.error} ({ms})")
    detail = f"healthy: leader {h.leader:x}, raft term {h.raft_term}, read OK ({ms})"
    if h.leader == 0:
        return warn(name, f"read OK but this member reports no leader ({ms})")
    return ok(name, detail)


def _cert_check(endpoint: str, cert: CertExpiry | None, now: float) -> Check:
    name = f"tls {endpoint}"
    if cert is None:
        return fail(name, "no TLS handshake within the timeout")
    if cert.expired:
        return fail(name, f"the server certificate has expired ({cert.error})")
    days = days_left(cert, now)
    if days is None:
        return fail(name, cert.error or "no certificate")
    when = time.strftime("%Y-%m-%d", time.gmtime(cert.not_after or 0))
    if days < 0:
        return fail(name, f"the server certificate expired on {when}")
    if days < WARN_DAYS:
        return warn(name, f"the server certificate expires in {days:.0f} days ({when})")
    return ok(name, f"server certificate valid until {when} ({days:.0f} days)")


def _auth_check(username: str | None, healths: list[EndpointHealth]) -> Check:
    if not username:
        return ok("auth", "no etcd user configured (etcd.username)")
    refused = [h.endpoint for h in healths if h.authenticated is False]
    if refused:
        return fail("auth", f"user {username} refused by {', '.join(refused)}")
    done = sum(1 for h in healths if h.authenticated)
    if not done:
        return fail("auth", f"user {username}: no endpoint answered the authentication")
    return ok("auth", f"user {username} authenticated on {done} of {len(healths)} endpoint(s)")


def _alarms(healths: list[EndpointHealth]) -> Check:
    read = [h.alarms for h in healths if h.alarms is not None]
    if not read:
        notes = sorted({n for h in healths for n in h.notes})
        return checks.alarms_check(None, "; ".join(notes))
    return checks.alarms_check(sorted({a for alarms in read for a in alarms}))


async def run_doctor(
    cfg: Config,
    *,
    source: str = "defaults",
    timeout: float = DEFAULT_TIMEOUT,
    bound: float = DEFAULT_BOUND,
    clock: Clock | None = None,
) -> Report:
    """Every check (module docstring); the report says the exit code."""
    return await Doctor(cfg, source=source, timeout=timeout, bound=bound, clock=clock).run()

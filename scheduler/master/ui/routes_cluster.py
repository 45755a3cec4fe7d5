"""The workers page and the cluster page (etcd members and leader, space, housekeeping leader)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from scheduler.etcd.client import EtcdAuthError, EtcdError
from scheduler.master.ui.core import Ui
from scheduler.master.ui.overview import live_workers
from scheduler.master.ui.sessions import Session
from scheduler.registration import WorkerRegistration

SKEW_WARN = 0.5
"""Seconds of clock skew shown as a warning."""


def worker_health(w: dict[str, Any]) -> tuple[str, str]:
    """(CSS class, words) for a registration: draining, clock off, busy, or ok."""
    reg = WorkerRegistration.lenient(w)
    if reg.draining:
        return "muted", "draining"
    if not reg.clock_ok:
        return "bad", "clock out of bounds"
    if reg.skew is not None and abs(reg.skew) > SKEW_WARN:
        return "busy", "clock skewed"
    capacity, running = reg.capacity, reg.running
    if capacity and running is not None and running >= capacity:
        return "busy", "at capacity"
    return "ok", "healthy"


def add_cluster_routes(router: APIRouter, ui: Ui) -> None:
    store = ui.store
    Current = Annotated[Session, Depends(ui.session)]

    @router.get("/ui/workers", include_in_schema=False)
    async def workers(request: Request, session: Current) -> Response:
        found = await live_workers(store)
        rows = [(w, *worker_health(w)) for w in found]
        return ui.render(request, "workers.html", session, title="Workers", rows=rows)

    @router.get("/ui/cluster", include_in_schema=False)
    async def cluster(request: Request, session: Current) -> Response:
        client = store.client
        etcd_status = await client.status()
        try:
            members = await client.member_list()
        except EtcdAuthError:
            members = []  # the master's etcd user may not list members
        try:
            alarms = sorted(set(await client.alarms()))
        except EtcdAuthError:
            alarms = []
        leader_kv, _ = await client.get(store.ks.leader)
        housekeeper = leader_kv.value.decode("utf-8", "replace") if leader_kv else ""
        try:
            masters, _ = await client.get_prefix(store.ks.masters, keys_only=True)
        except EtcdError:
            masters = []
        quota = ui.quota_bytes
        used = etcd_status["db_size"] / quota if quota else 0.0
        return ui.render(
            request,
            "cluster.html",
            session,
            title="Cluster",
            etcd=etcd_status,
            members=members,
            alarms=alarms,
            housekeeper=housekeeper,
            masters=[store.ks.parse_master(kv.key) for kv in masters],
            quota=quota,
            used=used,
        )

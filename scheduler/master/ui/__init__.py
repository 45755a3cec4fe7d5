"""The web dashboard, served by the master under ``/ui/`` (docs/ui.md).

Server-rendered HTML (Jinja2 templates in ``templates/``), one stylesheet and
one small script in ``static/``; nothing is fetched from elsewhere. Routes read
the store directly, as the API does. Sign-in and CSRF: :mod:`.sessions`.
"""

from __future__ import annotations

from fastapi import APIRouter

from scheduler.master.tokens import Tokens
from scheduler.master.ui.core import Ui
from scheduler.master.ui.routes_auth import add_auth_routes
from scheduler.master.ui.routes_cluster import add_cluster_routes
from scheduler.master.ui.routes_edit import add_edit_routes
from scheduler.master.ui.routes_jobs import add_job_routes
from scheduler.master.ui.routes_runs import add_run_routes
from scheduler.store import JobStore

DEFAULT_QUOTA_BYTES = 2 * 1024**3


def ui_router(
    store: JobStore,
    tokens: Tokens,
    *,
    max_spec_bytes: int,
    quota_bytes: int = DEFAULT_QUOTA_BYTES,
) -> APIRouter:
    """Every ``/ui/`` route, for ``app.include_router``."""
    ui = Ui(store, tokens, max_spec_bytes=max_spec_bytes, quota_bytes=quota_bytes)
    router = APIRouter()
    add_auth_routes(router, ui)
    add_job_routes(router, ui)
    add_run_routes(router, ui)
    add_cluster_routes(router, ui)
    add_edit_routes(router, ui)
    return router

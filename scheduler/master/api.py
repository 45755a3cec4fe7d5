"""The master's JSON API, under ``/v1``.

Rules:

- Every route except ``GET /v1/health`` (and the OpenAPI pages with
  ``public_docs``) needs ``Authorization: Bearer <token>``, checked by
  :meth:`Tokens.check` (hashed, constant time). A missing or wrong token is
  answered 401, a token whose scope is too low for the request 403
  (:func:`~scheduler.master.principal.required_scope`: GET ``read``; run, kill,
  suspend, resume ``operate``; put, delete, apply ``admin``), by
  :class:`~scheduler.master.http_guard.HttpGuard` before the body is read, and
  checked again by the routes. The guard also bounds the body
  (``max_body_bytes``: 413) and refuses JSON that is not strict (422).
- Job specs are validated here, all of them before any write: a bad spec is a
  422 whose ``problems`` name the job and the field; nothing is written. The
  limits of :mod:`scheduler.limits` apply, with the spec size bounded by
  ``max_spec_bytes`` (``master.max_spec_bytes``).
- ``If-Match: <mod_revision>`` on PUT/DELETE makes the write a compare-and-swap
  (``0`` = must not exist); a mismatch is 409; a value that is not a number
  from 0 to 2**63-1 in ASCII digits is 400. Responses carry the job's mod
  revision in ``ETag``.
- Errors quote client input clipped (:mod:`scheduler.clip`), and list at most
  ``MAX_PROBLEMS`` problems: an error answer stays small whatever was sent.
- Unknown job: 404. etcd unreachable (or refusing the master's credentials): 503.
  A write larger than etcd takes in one request: 413.
  A value in etcd that is not a valid spec: 500 naming the job (PUT a valid
  spec to repair it).

The routes live by area: jobs and spec validation in :mod:`~scheduler.master.jobs_api`,
runs in :mod:`~scheduler.master.runs_api`, workers in :mod:`~scheduler.master.workers_api`,
output in :mod:`~scheduler.master.logs_api`, audit in :mod:`~scheduler.master.audit_api`,
notifications in :mod:`~scheduler.master.notify_api`, health in
:mod:`~scheduler.master.health_api`; error answers in :mod:`~scheduler.master.api_errors`.
This module builds the app and checks the token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler import __version__
from scheduler.config import DEFAULT_MAX_BODY_BYTES
from scheduler.limits import MAX_SPEC_BYTES
from scheduler.master.api_errors import (
    ERRORS,
    MAX_PROBLEMS,
    BadRequest,
    ErrorOut,
    Forbidden,
    Problem,
    SpecError,
    Unauthorized,
    install_handlers,
    parse_if_match,
)
from scheduler.master.audit_api import add_audit_routes
from scheduler.master.health_api import add_health_route
from scheduler.master.http_guard import HttpGuard
from scheduler.master.jobs_api import MAX_JOBS_PER_APPLY, add_job_routes, parse_specs
from scheduler.master.logs_api import add_output_routes
from scheduler.master.notify_api import add_notification_routes
from scheduler.master.principal import Principal, client_address, forbidden, required_scope
from scheduler.master.runs_api import add_run_routes
from scheduler.master.tokens import Tokens
from scheduler.master.ui import ui_router
from scheduler.master.workers_api import add_worker_routes
from scheduler.store import JobStore

__all__ = [  # the app, and names callers import from here
    "MAX_JOBS_PER_APPLY",
    "MAX_PROBLEMS",
    "BadRequest",
    "ErrorOut",
    "Problem",
    "SpecError",
    "create_app",
    "parse_specs",
]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
# (module level: annotations are resolved from module globals)


def create_app(
    store: JobStore,
    *,
    token: str | None = None,
    tokens: Tokens | None = None,
    public_docs: bool = False,
    max_spec_bytes: int = MAX_SPEC_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    etcd_quota_bytes: int = 2 * 1024**3,
) -> FastAPI:
    """The API for one store, behind :class:`HttpGuard`: ``tokens``, or one
    admin ``token`` (non-empty). The web dashboard (:mod:`scheduler.master.ui`)
    is served under ``/ui/``."""
    if (token is None) == (tokens is None):
        raise ValueError("create_app needs either token or tokens")
    known = tokens if tokens is not None else Tokens(token)

    async def auth(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        # Starlette decodes headers as latin-1: encode back to the bytes sent,
        # the bytes the guard compared.
        given = creds.credentials.encode("latin-1") if creds is not None else b""
        principal = known.check(given, client_address(request))
        if principal is None:
            raise Unauthorized()
        needed = required_scope(request.method, request.scope["path"])
        if not principal.can(needed):
            raise Forbidden(forbidden(principal, needed))
        request.state.principal = principal
        return principal

    app = FastAPI(title="etcron master", version=__version__, docs_url="/docs")
    app.add_middleware(
        HttpGuard, tokens=known, max_body_bytes=max_body_bytes, public_docs=public_docs
    )
    install_handlers(app)

    add_health_route(app, store, known)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth)], responses=ERRORS)

    add_job_routes(v1, store, max_spec_bytes)
    add_run_routes(v1, store)
    add_worker_routes(v1, store)
    add_output_routes(v1, store)
    add_audit_routes(v1, store, parse_if_match)
    add_notification_routes(v1, store)
    app.include_router(v1)
    app.include_router(
        ui_router(store, known, max_spec_bytes=max_spec_bytes, quota_bytes=etcd_quota_bytes)
    )
    return app

"""``GET /v1/health``: the one API route that needs no token.

Rules:

- 200 when etcd answers and takes writes; 503 when it does not answer (or
  refuses the master's credentials), or raises its NOSPACE alarm.
- The answer to a caller without a valid token says nothing about the backend
  beyond that: no etcd error text, which can carry endpoint addresses, user
  names or certificate paths. A caller with a valid token (any scope) gets the
  error in full. The master logs the error (at most once a minute while it
  lasts), so an operator sees why a probe fails.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scheduler import __version__
from scheduler.etcd.client import EtcdAuthError, EtcdError
from scheduler.master.tokens import Tokens
from scheduler.store import JobStore

log = structlog.get_logger("etcron.master")

UNAVAILABLE = "etcd unavailable (details for an authenticated caller, and in the master's log)"
LOG_EVERY = 60.0


class HealthOut(BaseModel):
    status: str
    etcd_revision: int | None = None
    version: str = __version__
    error: str | None = None
    alarms: list[str] = []


async def _alarms(store: JobStore) -> list[str]:
    """etcd's active alarms; [] when the master's etcd user may not read them."""
    try:
        return sorted(set(await store.client.alarms()))
    except EtcdAuthError:
        return []


def _authenticated(request: Request, tokens: Tokens) -> bool:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return False
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return tokens.check(credentials.strip().encode("latin-1")) is not None


def add_health_route(app: FastAPI, store: JobStore, tokens: Tokens) -> None:
    last_logged = -LOG_EVERY

    @app.get("/v1/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def health(request: Request) -> Any:
        """No auth. 200 when etcd answers and takes writes, 503 otherwise (etcd
        unreachable, or its NOSPACE alarm: it refuses every write). Without a
        valid token, an unreachable etcd is reported without details."""
        nonlocal last_logged
        try:
            rev = await store.revision()
            alarms = await _alarms(store)
        except EtcdError as exc:
            now = time.monotonic()
            if now - last_logged >= LOG_EVERY:
                last_logged = now
                log.warning("health: etcd unavailable", error=str(exc))
            error = str(exc) if _authenticated(request, tokens) else UNAVAILABLE
            out = HealthOut(status="unavailable", error=error)
            return JSONResponse(out.model_dump(), status_code=503)
        if "NOSPACE" in alarms:
            why = "etcd is out of space (NOSPACE alarm): it refuses writes; see docs/operations.md"
            out = HealthOut(status="nospace", etcd_revision=rev, error=why, alarms=alarms)
            return JSONResponse(out.model_dump(), status_code=503)
        return HealthOut(status="ok", etcd_revision=rev, alarms=alarms)

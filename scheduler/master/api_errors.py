"""How the master's JSON API answers errors: one JSON shape (:class:`ErrorOut`,
every string clipped, at most :data:`MAX_PROBLEMS` problems) and one status per
kind of failure (see the rules in :mod:`scheduler.master.api`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scheduler.clip import clip, quote
from scheduler.etcd.client import EtcdError
from scheduler.master.http_guard import UNAUTHORIZED
from scheduler.store import ConflictError, CorruptValue, JobNotFound

MAX_PROBLEMS = 100
"""An error lists at most this many problems (then one saying how many more)."""
MAX_REVISION = 2**63 - 1
ETCD_TOO_LARGE = ("request is too large", "received message larger than max")
"""What etcd (or its gRPC server) says of a request over its size limit (1.5 MiB by default)."""
_REVISION_RE = re.compile(r"[0-9]{1,19}")


class Problem(BaseModel):
    job: str | None = None
    field: str | None = None
    message: str


class ErrorOut(BaseModel):
    detail: str
    problems: list[Problem] = []


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    403: {"model": ErrorOut, "description": "the token's scope is too low for the request"},
    503: {"model": ErrorOut, "description": "etcd unavailable"},
}
"""The error answers every ``/v1`` route may give (for the OpenAPI document)."""


class SpecError(Exception):
    """Invalid input: 422 listing the problems."""

    status = 422

    def __init__(self, problems: list[Problem]) -> None:
        shown = "; ".join(f"{p.job}: {p.field}: {p.message}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(shown + more)
        self.problems = problems


class BadRequest(SpecError):
    """A malformed request (a header that cannot mean anything): 400."""

    status = 400


class Unauthorized(Exception):
    """No token, or a wrong one: 401."""


class Forbidden(Exception):
    """The token's scope is too low for the request: 403."""


class NotFound(Exception):
    """A thing other than a job that is not there (a run, say): 404."""


def parse_if_match(value: str | None) -> int | None:
    """The mod revision in ``If-Match`` (``123``, ``"123"`` or ``W/"123"``)."""
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not _REVISION_RE.fullmatch(text) or int(text) > MAX_REVISION:
        message = f"expected a mod revision (a number from 0 to {MAX_REVISION}), got {quote(value)}"
        raise BadRequest([Problem(field="If-Match", message=message)])
    return int(text)


def _clip_problem(p: Problem) -> Problem:
    return Problem(
        job=None if p.job is None else clip(p.job),
        field=None if p.field is None else clip(p.field),
        message=clip(p.message, 300),
    )


def _error(status: int, detail: str, problems: list[Problem] | None = None) -> JSONResponse:
    """The JSON error; every string clipped, at most MAX_PROBLEMS problems."""
    problems = problems or []
    shown = [_clip_problem(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(Problem(message=f"and {len(problems) - MAX_PROBLEMS} more problems"))
    body = ErrorOut(detail=clip(detail, 500), problems=shown)
    return JSONResponse(body.model_dump(), status_code=status)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError) -> JSONResponse:
        what = "invalid input" if exc.status == 422 else "bad request"
        return _error(exc.status, f"{what}: {exc}", exc.problems)

    @app.exception_handler(RequestValidationError)
    async def _request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            Problem(field=".".join(str(p) for p in e["loc"]), message=str(e["msg"]))
            for e in exc.errors()
        ]
        return _error(422, "invalid request", problems)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return _error(
            409, str(exc), [Problem(job=j, message="changed concurrently") for j in exc.jobs]
        )

    @app.exception_handler(JobNotFound)
    async def _missing(_: Request, exc: JobNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(CorruptValue)
    async def _corrupt(_: Request, exc: CorruptValue) -> JSONResponse:
        return _error(500, str(exc))

    @app.exception_handler(EtcdError)
    async def _etcd(_: Request, exc: EtcdError) -> JSONResponse:
        if any(text in str(exc) for text in ETCD_TOO_LARGE):  # etcd's --max-request-bytes
            return _error(413, "too large for one etcd request: send smaller specs or fewer jobs")
        return _error(503, f"etcd unavailable: {exc}")

    @app.exception_handler(Unauthorized)
    async def _unauth(_: Request, __: Unauthorized) -> JSONResponse:
        resp = _error(401, UNAUTHORIZED)
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.exception_handler(Forbidden)
    async def _forbid(_: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, str(exc))

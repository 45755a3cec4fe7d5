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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler import __version__
from scheduler.clip import clip, quote
from scheduler.config import DEFAULT_MAX_BODY_BYTES
from scheduler.etcd.client import EtcdError
from scheduler.limits import MAX_SPEC_BYTES
from scheduler.master.audit_api import actor_of, add_audit_routes
from scheduler.master.health_api import add_health_route
from scheduler.master.http_guard import UNAUTHORIZED, HttpGuard
from scheduler.master.logs_api import add_output_routes
from scheduler.master.notify_api import add_notification_routes
from scheduler.master.principal import Principal, client_address, forbidden, required_scope
from scheduler.master.tokens import Tokens
from scheduler.model import JobSpec, validation_messages
from scheduler.runs import RunRecord
from scheduler.store import ConflictError, CorruptValue, JobNotFound, JobStore

MAX_JOBS_PER_APPLY = 10_000
MAX_PROBLEMS = 100
"""An error lists at most this many problems (then one saying how many more)."""
MAX_REVISION = 2**63 - 1
ETCD_TOO_LARGE = ("request is too large", "received message larger than max")
"""What etcd (or its gRPC server) says of a request over its size limit (1.5 MiB by default)."""
_REVISION_RE = re.compile(r"[0-9]{1,19}")

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
# (module level: annotations are resolved from module globals)


# response and request models ---------------------------------------------------


class Problem(BaseModel):
    job: str | None = None
    field: str | None = None
    message: str


class ErrorOut(BaseModel):
    detail: str
    problems: list[Problem] = []


class InvalidJobOut(BaseModel):
    name: str
    error: str


class JobListOut(BaseModel):
    jobs: list[JobSpec]
    invalid: list[InvalidJobOut]
    revision: int


class JobOut(BaseModel):
    name: str
    mod_revision: int
    spec: JobSpec


class DeletedOut(BaseModel):
    deleted: str


class ApplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[Any] = Field(description="job specs, as in a jobs file")
    prune: bool = Field(False, description="delete jobs in etcd that are not in `jobs`")
    dry_run: bool = Field(False, description="compute the plan, write nothing")


class PlanOut(BaseModel):
    create: list[str]
    update: list[str]
    unchanged: list[str]
    delete: list[str]
    invalid_in_etcd: list[InvalidJobOut]
    revision: int
    applied: bool
    dry_run: bool
    batches: int


class RunRequestOut(BaseModel):
    job: str
    request_id: str


class KillOut(BaseModel):
    job: str
    requested: bool = True
    ended: list[str] = []
    """Runs still ``running`` whose worker is gone (lease dead), ended here as ``killed``."""


class RunListOut(BaseModel):
    job: str
    runs: list[RunRecord]


class WorkerOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    host: str | None = None
    pid: int | None = None
    labels: dict[str, Any] = {}
    capacity: int | None = None
    running: int | None = None
    version: str | None = None
    clock: float | None = None
    skew: float | None = Field(None, description="seconds; see JobStore.list_workers")


class WorkerListOut(BaseModel):
    workers: list[WorkerOut]


# helpers ---------------------------------------------------------------------


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


def _label(raw: Any, index: int | None) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        return clip(raw["name"])
    return f"#{index + 1}" if index is not None else "?"


def parse_specs(raws: list[Any], max_spec_bytes: int = MAX_SPEC_BYTES) -> list[JobSpec]:
    """Validate every raw spec; raise :class:`SpecError` listing all problems."""
    context = {"max_spec_bytes": max_spec_bytes}
    problems: list[Problem] = []
    specs: list[JobSpec] = []
    for i, raw in enumerate(raws):
        job = _label(raw, i)
        if not isinstance(raw, dict):
            problems.append(Problem(job=job, message="a job must be a JSON object"))
            continue
        try:
            specs.append(JobSpec.model_validate(raw, context=context))
        except ValidationError as exc:
            for field, msg in validation_messages(exc):
                problems.append(Problem(job=job, field=field or None, message=msg))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            problems.append(Problem(job=spec.name, field="name", message="defined more than once"))
        seen.add(spec.name)
    if problems:
        raise SpecError(problems)
    return specs


def _if_match(value: str | None) -> int | None:
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


def _install_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(_NotFound)
    async def _not_found(_: Request, exc: _NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(CorruptValue)
    async def _corrupt(_: Request, exc: CorruptValue) -> JSONResponse:
        return _error(500, str(exc))

    @app.exception_handler(EtcdError)
    async def _etcd(_: Request, exc: EtcdError) -> JSONResponse:
        if any(text in str(exc) for text in ETCD_TOO_LARGE):  # etcd's --max-request-bytes
            return _error(413, "too large for one etcd request: send smaller specs or fewer jobs")
        return _error(503, f"etcd unavailable: {exc}")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    403: {"model": ErrorOut, "description": "the token's scope is too low for the request"},
    503: {"model": ErrorOut, "description": "etcd unavailable"},
}


# the app ---------------------------------------------------------------------


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
    from scheduler.master.ui import ui_router  # it reuses parse_specs from here

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
            raise _Unauthorized()
        needed = required_scope(request.method, request.scope["path"])
        if not principal.can(needed):
            raise _Forbidden(forbidden(principal, needed))
        request.state.principal = principal
        return principal

    app = FastAPI(title="etcron master", version=__version__, docs_url="/docs")
    app.add_middleware(
        HttpGuard, tokens=known, max_body_bytes=max_body_bytes, public_docs=public_docs
    )
    _install_handlers(app)

    @app.exception_handler(_Unauthorized)
    async def _unauth(_: Request, __: _Unauthorized) -> JSONResponse:
        resp = _error(401, UNAUTHORIZED)
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.exception_handler(_Forbidden)
    async def _forbid(_: Request, exc: _Forbidden) -> JSONResponse:
        return _error(403, str(exc))

    add_health_route(app, store, known)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth)], responses=ERRORS)

    @v1.get("/jobs", response_model=JobListOut)
    async def list_jobs() -> JobListOut:
        jobs, bad, rev = await store.list_jobs()
        invalid = [InvalidJobOut(name=n, error=e) for n, e in bad]
        return JobListOut(jobs=jobs, invalid=invalid, revision=rev)

    @v1.get("/jobs/{name}", response_model=JobOut)
    async def get_job(name: str, response: Response) -> JobOut:
        found = await store.get_job(name)
        if found is None:
            raise JobNotFound(name)
        response.headers["ETag"] = f'"{found[1]}"'
        return JobOut(name=name, mod_revision=found[1], spec=found[0])

    @v1.put("/jobs/{name}", response_model=JobOut, responses={409: {"model": ErrorOut}})
    async def put_job(
        name: str,
        body: dict[str, Any],
        request: Request,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
    ) -> JobOut:
        """Create or replace a job. The body is a job spec; its `name` may be omitted."""
        expect = _if_match(if_match)
        raw = {"name": name, **body}
        if raw["name"] != name:
            raise SpecError(
                [Problem(job=name, field="name", message=f"body names {quote(raw['name'])}")]
            )
        (spec,) = parse_specs([raw], max_spec_bytes)
        rev = await store.acting_as(actor_of(request)).put_job(spec, expect_mod_revision=expect)
        response.headers["ETag"] = f'"{rev}"'
        return JobOut(name=name, mod_revision=rev, spec=spec)

    @v1.delete("/jobs/{name}", response_model=DeletedOut, responses={409: {"model": ErrorOut}})
    async def delete_job(
        name: str, request: Request, if_match: Annotated[str | None, Header()] = None
    ) -> DeletedOut:
        by = store.acting_as(actor_of(request))
        if not await by.delete_job(name, expect_mod_revision=_if_match(if_match)):
            raise JobNotFound(name)
        return DeletedOut(deleted=name)

    @v1.post("/apply", response_model=PlanOut, responses={409: {"model": ErrorOut}})
    async def apply(body: ApplyIn, request: Request) -> PlanOut:
        """Validate every job, then create/update (and with `prune`, delete) in etcd.

        Up to 40 writes are one transaction; larger applies are written in
        batches of 40 and are not atomic across batches (one audit entry each).
        """
        if len(body.jobs) > MAX_JOBS_PER_APPLY:
            raise SpecError([Problem(message=f"more than {MAX_JOBS_PER_APPLY} jobs")])
        specs = parse_specs(body.jobs, max_spec_bytes)
        by = store.acting_as(actor_of(request))
        plan = await by.apply(specs, prune=body.prune, dry_run=body.dry_run)
        return PlanOut.model_validate(plan.summary())

    @v1.post("/jobs/{name}/suspend", response_model=JobSpec)
    async def suspend(name: str, request: Request) -> JobSpec:
        by = store.acting_as(actor_of(request))
        return await by.update_job(name, _suspended(True), operation="suspend")

    @v1.post("/jobs/{name}/resume", response_model=JobSpec)
    async def resume(name: str, request: Request) -> JobSpec:
        by = store.acting_as(actor_of(request))
        return await by.update_job(name, _suspended(False), operation="resume")

    @v1.post("/jobs/{name}/run", response_model=RunRequestOut, status_code=202)
    async def run(name: str, request: Request) -> RunRequestOut:
        """Ask the workers for one manual run now (the request expires after 60 s)."""
        by = store.acting_as(actor_of(request))
        return RunRequestOut(job=name, request_id=await by.request_run(name))

    @v1.post("/jobs/{name}/kill", response_model=KillOut, status_code=202)
    async def kill(name: str, request: Request) -> KillOut:
        """Stop every running run of the job.

        Live workers are asked to stop theirs (the request lives 30 s) and record
        them as `killed`; a `running` record whose worker is gone (its lease no
        longer exists) is ended here as `killed` ("worker gone") and listed in
        `ended`.
        """
        by = store.acting_as(actor_of(request))
        return KillOut(job=name, ended=await by.request_kill(name))

    @v1.get("/jobs/{name}/runs", response_model=RunListOut)
    async def runs(name: str, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> RunListOut:
        """Newest first."""
        records = await store.list_runs(name, limit)
        if not records and await store.get_job(name) is None:
            raise JobNotFound(name)
        return RunListOut(job=name, runs=records)

    @v1.get("/jobs/{name}/runs/{run_id}", response_model=RunRecord)
    async def get_run(name: str, run_id: str) -> RunRecord:
        rec = await store.get_run(name, run_id)
        if rec is None:
            raise _NotFound(f"run {quote(run_id)} of job {quote(name)} not found")
        return rec

    @v1.get("/workers", response_model=WorkerListOut)
    async def workers() -> WorkerListOut:
        out = []
        for w in await store.list_workers():
            try:
                out.append(WorkerOut.model_validate(w))
            except ValidationError:
                continue  # a registration of an unexpected shape is not shown
        return WorkerListOut(workers=out)

    add_output_routes(v1, store)
    add_audit_routes(v1, store, _if_match)
    add_notification_routes(v1, store)
    app.include_router(v1)
    app.include_router(
        ui_router(store, known, max_spec_bytes=max_spec_bytes, quota_bytes=etcd_quota_bytes)
    )
    return app


def _suspended(value: bool) -> Callable[[JobSpec], JobSpec]:
    return lambda s: s.model_copy(update={"suspend": value})


class _Unauthorized(Exception):
    pass


class _Forbidden(Exception):
    pass


class _NotFound(Exception):
    pass

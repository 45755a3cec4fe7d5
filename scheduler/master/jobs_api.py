"""Job routes of the master API: list, read, create or replace, delete, apply,
suspend and resume; and the validation of job specs they share with the dashboard
(:func:`parse_specs`: every spec checked before anything is written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler.clip import clip, quote
from scheduler.limits import MAX_SPEC_BYTES
from scheduler.master.api_errors import ErrorOut, Problem, SpecError, parse_if_match
from scheduler.master.audit_api import actor_of
from scheduler.model import JobSpec, validation_messages
from scheduler.store import JobNotFound, JobStore

MAX_JOBS_PER_APPLY = 10_000


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


def add_job_routes(v1: APIRouter, store: JobStore, max_spec_bytes: int) -> None:
    """The ``/v1/jobs`` and ``/v1/apply`` routes (bearer token checked by ``v1``)."""

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
        expect = parse_if_match(if_match)
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
        if not await by.delete_job(name, expect_mod_revision=parse_if_match(if_match)):
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


def _suspended(value: bool) -> Callable[[JobSpec], JobSpec]:
    return lambda s: s.model_copy(update={"suspend": value})

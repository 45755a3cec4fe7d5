"""Run routes of the master API: ask for a manual run, kill a job's runs, list a
job's runs and read one (a run's output is :mod:`scheduler.master.logs_api`'s).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from scheduler.clip import quote
from scheduler.master.api_errors import NotFound
from scheduler.master.audit_api import actor_of
from scheduler.runs import RunRecord
from scheduler.store import JobNotFound, JobStore


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


def add_run_routes(v1: APIRouter, store: JobStore) -> None:
    """The ``/v1/jobs/{name}/run``, ``/kill`` and ``/runs`` routes."""

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
            raise NotFound(f"run {quote(run_id)} of job {quote(name)} not found")
        return rec

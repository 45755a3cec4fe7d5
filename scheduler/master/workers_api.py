"""The worker list route of the master API (``GET /v1/workers``): the registered
workers as they describe themselves, shapes the master does not know left out.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler.store import JobStore


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


def add_worker_routes(v1: APIRouter, store: JobStore) -> None:
    """``GET /v1/workers``."""

    @v1.get("/workers", response_model=WorkerListOut)
    async def workers() -> WorkerListOut:
        out = []
        for w in await store.list_workers():
            try:
                out.append(WorkerOut.model_validate(w))
            except ValidationError:
                continue  # a registration of an unexpected shape is not shown
        return WorkerListOut(workers=out)

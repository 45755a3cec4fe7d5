"""Output routes of the master API: read a run's output, follow runs live.

Both answer newline-delimited JSON when following (``application/x-ndjson``),
one object per line, so a client can print as it reads:

- ``{"type": "run", "run": <RunRecord>}``      a run starts (header)
- ``{"type": "output", "stream": "stdout", "time": 1795..., "text": "..."}``
- ``{"type": "end", "run": <RunRecord>}``      the run is final (status, exit code)

Behind the same bearer token as every other route (the router's dependency).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from scheduler.clip import quote
from scheduler.output_chunks import Segment
from scheduler.output_reader import follow_output, follow_runs, read_output
from scheduler.runs import RunRecord
from scheduler.store import JobStore

NDJSON = "application/x-ndjson"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, default=str).encode() + b"\n"


def _seg(seg: Segment) -> dict[str, Any]:
    return {"type": "output", **seg.as_dict()}


def _run(kind: str, rec: RunRecord) -> dict[str, Any]:
    return {"type": kind, "run": json.loads(rec.model_dump_json())}


def add_output_routes(router: APIRouter, store: JobStore) -> None:
    client, ks = store.client, store.ks

    async def _record(name: str, run_id: str) -> RunRecord:
        rec = await store.get_run(name, run_id)
        if rec is None:
            raise HTTPException(404, f"run {quote(run_id)} of job {quote(name)} not found")
        return rec

    async def _follow_one(name: str, run_id: str) -> AsyncIterator[bytes]:
        async for item in follow_output(client, ks, name, run_id):
            yield _line(_seg(item) if isinstance(item, Segment) else _run("end", item))

    @router.get("/jobs/{name}/runs/{run_id}/output", response_model=None)
    async def run_output(name: str, run_id: str, follow: Annotated[bool, Query()] = False) -> Any:
        """The run's output; ``follow=true`` streams it live (NDJSON) until the run ends."""
        rec = await _record(name, run_id)
        if not follow:
            segs = await read_output(client, ks, name, run_id)
            return {"run": json.loads(rec.model_dump_json()), "output": [s.as_dict() for s in segs]}

        async def stream() -> AsyncIterator[bytes]:
            yield _line(_run("run", rec))
            async for line in _follow_one(name, run_id):
                yield line

        return StreamingResponse(stream(), media_type=NDJSON)

    @router.get("/jobs/{name}/follow", response_model=None)
    async def follow_job(name: str, after: Annotated[str, Query()] = "") -> StreamingResponse:
        """Follow every run of the job that starts after run id ``after`` (and the
        latest one if it is still running), each with a header and an end line."""
        if await store.get_job(name) is None:
            raise HTTPException(404, f"job {quote(name)} not found")

        async def stream() -> AsyncIterator[bytes]:
            async for run_id in follow_runs(client, ks, name, start_after=after):
                rec = await store.get_run(name, run_id)
                if rec is None:
                    continue
                yield _line(_run("run", rec))
                async for line in _follow_one(name, run_id):
                    yield line

        return StreamingResponse(stream(), media_type=NDJSON)

"""A run's page, its live output (server-sent events), the raw download, and the
page that waits for the run a "run now" request starts.

Live output is the master's follow (:func:`scheduler.output_reader.follow_output`, a
list-watch of the run's chunks and record) sent as server-sent events:

- ``event: output`` ``data: {"stream", "time", "text"}``, ``id:`` the segment's
  index. A reconnecting browser sends ``Last-Event-ID``; the segments it has
  are not sent again.
- ``event: end`` ``data: {"status", "exit_code", "message"}``, then the stream ends.

Every stream is bounded: :data:`MAX_FOLLOW` seconds (the browser reconnects
and continues where it was), a comment line every :data:`KEEPALIVE` seconds
so a proxy or a gone client is noticed.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from scheduler.master.ui.core import Ui
from scheduler.master.ui.present import seconds, status_class
from scheduler.master.ui.sessions import Session
from scheduler.output_chunks import Segment
from scheduler.output_reader import follow_output, follow_runs, read_output
from scheduler.run_control import TRIGGER_TTL
from scheduler.runs import RunRecord

MAX_FOLLOW = 600.0
KEEPALIVE = 15.0
SSE = "text/event-stream"


def _event(kind: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _end(rec: RunRecord) -> dict[str, Any]:
    return {
        "status": rec.status.value,
        "class": status_class(rec.status),
        "exit_code": rec.exit_code,
        "message": rec.message,
        "duration": seconds(rec.duration),
    }


async def _bounded(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``source``, with keep-alive comments, for at most MAX_FOLLOW seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_FOLLOW
    it = aiter(source)
    pending: asyncio.Task[bytes] | None = None
    try:
        while (left := deadline - loop.time()) > 0:
            if pending is None:
                pending = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({pending}, timeout=min(KEEPALIVE, left))
            if not done:
                yield b": keep-alive\n\n"
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending  # the source must be idle before it is closed
        await it.aclose()  # type: ignore[attr-defined]


def add_run_routes(router: APIRouter, ui: Ui) -> None:
    store = ui.store
    client, ks = store.client, store.ks
    Current = Annotated[Session, Depends(ui.session)]

    @router.get("/ui/jobs/{name}/runs/{run_id}", include_in_schema=False)
    async def run_page(request: Request, session: Current, name: str, run_id: str) -> Response:
        rec = await store.get_run(name, run_id)
        if rec is None:
            return ui.not_found(request, session, f"No run {run_id!r} of job {name!r}.")
        live = not rec.status.final
        segments = [] if live else await read_output(client, ks, name, run_id)
        return ui.render(
            request,
            "run.html",
            session,
            title=f"{name} {run_id}",
            name=name,
            run=rec,
            live=live,
            segments=segments,
            stderr=[s for s in segments if s.stream == "stderr"],
        )

    @router.get("/ui/jobs/{name}/runs/{run_id}/events", include_in_schema=False)
    async def run_events(
        session: Current,
        name: str,
        run_id: str,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        if await store.get_run(name, run_id) is None:
            return Response("no such run\n", status_code=404, media_type="text/plain")
        seen = last_event_id or ""
        have = int(seen) + 1 if seen.isdigit() and len(seen) < 10 else 0

        async def stream() -> AsyncIterator[bytes]:
            index = 0
            async for item in follow_output(client, ks, name, run_id):
                if isinstance(item, Segment):
                    if index >= have:
                        yield _event("output", item.as_dict(), index)
                    index += 1
                else:
                    yield _event("end", _end(item))
                    return

        return StreamingResponse(_bounded(stream()), media_type=SSE, headers=_sse_headers())

    @router.get("/ui/jobs/{name}/runs/{run_id}/raw", include_in_schema=False)
    async def raw(session: Current, name: str, run_id: str) -> Response:
        rec = await store.get_run(name, run_id)
        if rec is None:
            return Response("no such run\n", status_code=404, media_type="text/plain")
        text = "".join(s.text for s in await read_output(client, ks, name, run_id))
        filename = f"{name}-{run_id}.log".replace('"', "")
        return Response(
            text,
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @router.get("/ui/jobs/{name}/requests/{request_id}", include_in_schema=False)
    async def requested(request: Request, session: Current, name: str, request_id: str) -> Response:
        return ui.render(
            request,
            "requested.html",
            session,
            title=f"Run {name}",
            name=name,
            request_id=request_id,
        )

    @router.get("/ui/jobs/{name}/requests/{request_id}/events", include_in_schema=False)
    async def requested_events(session: Current, name: str, request_id: str) -> Response:
        """One ``run`` event with the run page's URL once the requested run starts."""

        async def stream() -> AsyncIterator[bytes]:
            async with asyncio.timeout(TRIGGER_TTL + 5):
                async for run_id in follow_runs(client, ks, name):
                    if "-m" not in run_id:
                        continue  # a scheduled run (manual run ids are <tick>Z-m<hex>)
                    rec = await store.get_run(name, run_id)
                    if rec is not None and rec.request_id == request_id:
                        url = f"/ui/jobs/{quote(name)}/runs/{quote(run_id)}"
                        yield _event("run", {"run_id": run_id, "url": url})
                        return

        async def guarded() -> AsyncIterator[bytes]:
            try:
                async for item in stream():
                    yield item
            except TimeoutError:
                yield _event("timeout", {"message": "no worker took the request in time"})

        return StreamingResponse(_bounded(guarded()), media_type=SSE, headers=_sse_headers())


def _sse_headers() -> dict[str, str]:
    return {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

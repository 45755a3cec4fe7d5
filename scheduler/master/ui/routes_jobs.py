"""The jobs list, one job's page, and the job actions (run, kill, suspend, resume, delete).

Actions are POST forms (CSRF-checked, :meth:`Ui.form`): run, kill, suspend and
resume need the ``operate`` scope, delete ``admin``. Each answers with a 303
back to a page (post/redirect/get), so reloading never repeats an action.
"""

from datetime import datetime
from typing import Annotated
from urllib.parse import quote, urlencode

import yaml
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from scheduler.cli.render import compact_spec
from scheduler.cli.status import eligible, selector_text
from scheduler.master.ui.core import Ui
from scheduler.master.ui.overview import FILTERS, RECENT, listing, live_workers
from scheduler.master.ui.present import duration_chart, next_times
from scheduler.master.ui.sessions import Session
from scheduler.model import JobSpec
from scheduler.store import ConflictError, JobNotFound

HISTORY = 50
NEXT = 10
MAX_QUERY = 200


def spec_yaml(spec: JobSpec) -> str:
    """The spec as a jobs file writes it (defaults left out)."""
    return yaml.safe_dump(
        compact_spec(spec.model_dump(mode="json")), sort_keys=False, allow_unicode=True
    )


def add_job_routes(router: APIRouter, ui: Ui) -> None:
    store = ui.store
    Current = Annotated[Session, Depends(ui.session)]

    @router.get("/ui/jobs", include_in_schema=False)
    async def jobs(
        request: Request,
        session: Current,
        q: Annotated[str, Query(max_length=MAX_QUERY)] = "",
        filter: Annotated[str, Query(max_length=20)] = "",
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    ) -> Response:
        which = filter if filter in FILTERS else ""
        found = await listing(store, ui.cache, query=q.strip(), which=which, page=page)
        nexts: dict[str, datetime] = {}
        for row in found.rows:
            times = [] if row.spec.suspend else next_times(row.spec.schedule, row.spec.timezone, 1)
            if times:
                nexts[row.spec.name] = times[0]

        def page_url(n: int) -> str:
            args = {k: v for k, v in (("q", q), ("filter", which)) if v}
            return "/ui/jobs?" + urlencode({**args, "page": n})

        return ui.render(
            request,
            "jobs.html",
            session,
            title="Jobs",
            listing=found,
            nexts=nexts,
            q=q,
            which=which,
            filters=FILTERS,
            page_url=page_url,
            recent=RECENT,
        )

    @router.get("/ui/jobs/{name}", include_in_schema=False)
    async def job(request: Request, session: Current, name: str) -> Response:
        found = await store.get_job(name)
        if found is None:
            return ui.not_found(request, session, f"No job named {name!r}.")
        spec, mod = found
        runs = await store.list_runs(name, HISTORY)
        live = await live_workers(store)
        return ui.render(
            request,
            "job.html",
            session,
            title=name,
            spec=spec,
            mod_revision=mod,
            spec_yaml=spec_yaml(spec),
            next_times=[] if spec.suspend else next_times(spec.schedule, spec.timezone, NEXT),
            runs=runs,
            running=[r for r in runs if r.status.value == "running"],
            chart=duration_chart(runs),
            eligible=eligible(spec.selector, live),
            selector=selector_text(spec.selector),
        )

    def back(name: str, note: str) -> RedirectResponse:
        return RedirectResponse(f"/ui/jobs/{quote(name)}?{urlencode({'note': note})}", 303)

    @router.post("/ui/jobs/{name}/run", include_in_schema=False)
    async def run(request: Request, session: Current, name: str) -> Response:
        await ui.form(request, session, "operate")
        try:
            request_id = await store.request_run(name)
        except JobNotFound:
            return ui.not_found(request, session, f"No job named {name!r}.")
        return RedirectResponse(f"/ui/jobs/{quote(name)}/requests/{quote(request_id)}", 303)

    @router.post("/ui/jobs/{name}/kill", include_in_schema=False)
    async def kill(request: Request, session: Current, name: str) -> Response:
        await ui.form(request, session, "operate")
        try:
            ended = await store.request_kill(name)
        except JobNotFound:
            return ui.not_found(request, session, f"No job named {name!r}.")
        extra = f" ({len(ended)} run(s) of a gone worker ended)" if ended else ""
        return back(name, f"Kill requested{extra}.")

    async def set_suspend(request: Request, session: Session, name: str, value: bool) -> Response:
        await ui.form(request, session, "operate")
        try:
            await store.update_job(name, lambda s: s.model_copy(update={"suspend": value}))
        except JobNotFound:
            return ui.not_found(request, session, f"No job named {name!r}.")
        return back(name, "Suspended." if value else "Resumed.")

    @router.post("/ui/jobs/{name}/suspend", include_in_schema=False)
    async def suspend(request: Request, session: Current, name: str) -> Response:
        return await set_suspend(request, session, name, True)

    @router.post("/ui/jobs/{name}/resume", include_in_schema=False)
    async def resume(request: Request, session: Current, name: str) -> Response:
        return await set_suspend(request, session, name, False)

    @router.get("/ui/jobs/{name}/delete", include_in_schema=False)
    async def confirm_delete(request: Request, session: Current, name: str) -> Response:
        found = await store.get_job(name)
        if found is None:
            return ui.not_found(request, session, f"No job named {name!r}.")
        return ui.render(
            request, "delete.html", session, title=f"Delete {name}", name=name, mod=found[1]
        )

    @router.post("/ui/jobs/{name}/delete", include_in_schema=False)
    async def delete(request: Request, session: Current, name: str) -> Response:
        fields = await ui.form(request, session, "admin")
        mod = fields.get("mod", "")
        expect = int(mod) if mod.isdigit() and len(mod) < 19 else None
        try:
            deleted = await store.delete_job(name, expect_mod_revision=expect)
        except ConflictError:
            message = f"Job {name!r} changed since you confirmed: look at it again before deleting."
            return ui.render(
                request, "error.html", session, status=409, title="Not deleted", message=message
            )
        if not deleted:
            return ui.not_found(request, session, f"No job named {name!r}.")
        return RedirectResponse(f"/ui/jobs?{urlencode({'note': f'Deleted {name}.'})}", 303)

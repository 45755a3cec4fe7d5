"""The YAML editor: a jobs file (or one job) in a textarea, validated, shown as a
plan with a diff, then applied. Needs the ``admin`` scope to apply.

The same steps as ``etcron apply``: the text is read by
:func:`scheduler.jobfile.load_jobs_text` (every problem with its line), checked
by the API's :func:`~scheduler.master.jobs_api.parse_specs`, and planned by
:meth:`JobStore.apply` with ``dry_run=True``; as in the CLI, ``suspend`` is
kept from etcd unless the text sets it. Apply writes with the revisions of a
new plan: a job changed in between is a conflict, never overwritten silently.
"""

import difflib
from collections.abc import Collection
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Query, Request, Response

from scheduler.job_apply import Plan
from scheduler.jobfile import MAX_FILE_BYTES, JobFileError, load_jobs_text
from scheduler.master.api_errors import SpecError
from scheduler.master.jobs_api import parse_specs
from scheduler.master.ui.core import Ui
from scheduler.master.ui.routes_jobs import spec_yaml
from scheduler.master.ui.sessions import Session
from scheduler.model import JobSpec
from scheduler.store import ConflictError

EXAMPLE = """jobs:
  - name: example
    schedule: "*/5 * * * *"
    shell: echo hello
"""
MAX_DIFF_LINES = 2000


def _wire(spec: JobSpec, suspended: Collection[str]) -> dict[str, Any]:
    """The spec as sent by the CLI: a job suspended in etcd stays so unless the text says."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    data["name"] = spec.name
    if "suspend" not in spec.model_fields_set and spec.name in suspended:
        data["suspend"] = True
    return data


def _diff(old: str, new: str, name: str) -> list[str]:
    lines = list(
        difflib.unified_diff(
            old.splitlines(), new.splitlines(), f"etcd: {name}", f"editor: {name}", lineterm=""
        )
    )
    return lines[:MAX_DIFF_LINES]


def add_edit_routes(router: APIRouter, ui: Ui) -> None:
    store = ui.store
    Current = Annotated[Session, Depends(ui.session)]

    @router.get("/ui/edit", include_in_schema=False)
    async def edit_page(
        request: Request, session: Current, job: Annotated[str, Query(max_length=63)] = ""
    ) -> Response:
        text = EXAMPLE
        if job:
            found = await store.get_job(job)
            if found is None:
                return ui.not_found(request, session, f"No job named {job!r}.")
            body = yaml.safe_dump({"jobs": [yaml.safe_load(spec_yaml(found[0]))]}, sort_keys=False)
            text = body
        return ui.render(request, "edit.html", session, title="Edit jobs", text=text, **_empty())

    @router.post("/ui/edit", include_in_schema=False)
    async def edit(request: Request, session: Current) -> Response:
        fields = await ui.form(request, session, "read")
        text = fields.get("yaml", "")
        prune = fields.get("prune") == "on"
        applying = fields.get("action") == "apply"
        if applying and not session.principal.can("admin"):
            return ui.render(
                request,
                "edit.html",
                session,
                status=403,
                title="Edit jobs",
                text=text,
                **{**_empty(), "problems": ["this token may not apply changes (needs admin)"]},
            )
        context = await _check(ui, text, prune, apply=applying)
        status = 422 if context["problems"] else 200
        return ui.render(
            request, "edit.html", session, status=status, title="Edit jobs", text=text, **context
        )

    return None


def _empty() -> dict[str, Any]:
    return {"problems": [], "plan": None, "diffs": {}, "prune": False, "applied": False}


async def _check(ui: Ui, text: str, prune: bool, *, apply: bool) -> dict[str, Any]:
    """Validate and plan ``text`` (and apply it when ``apply``): the template's context."""
    out = {**_empty(), "prune": prune}
    if len(text.encode()) > MAX_FILE_BYTES:
        out["problems"] = [f"the text is larger than {MAX_FILE_BYTES} bytes"]
        return out
    try:
        jobs = load_jobs_text(text, "editor")
        current, _, _ = await ui.store.list_jobs()
        suspended = {j.name for j in current if j.suspend}
        specs = parse_specs([_wire(j, suspended) for j in jobs], ui.max_spec_bytes)
        plan = await ui.store.apply(specs, prune=prune, dry_run=True)
    except JobFileError as exc:
        out["problems"] = [str(p) for p in exc.problems]
        return out
    except SpecError as exc:
        out["problems"] = [f"job {p.job}: {p.field or '-'}: {p.message}" for p in exc.problems]
        return out
    out["diffs"] = _diffs(plan, {j.name: j for j in current}, specs)
    if apply:
        try:
            plan = await ui.store.apply(specs, prune=prune, dry_run=False)
        except ConflictError as exc:
            out["problems"] = [f"{exc} (validate again to see the new plan)"]
            return out
        out["applied"] = True
    out["plan"] = plan
    return out


def _diffs(plan: Plan, current: dict[str, JobSpec], specs: list[JobSpec]) -> dict[str, list[str]]:
    new = {s.name: s for s in specs}
    diffs: dict[str, list[str]] = {}
    for change in plan.writes:
        old_text = spec_yaml(current[change.name]) if change.name in current else ""
        new_text = spec_yaml(new[change.name]) if change.name in new else ""
        diffs[change.name] = _diff(old_text, new_text, change.name)
    return diffs

"""Audit and definition-history routes of the master API (behind the router's token).

- ``GET /v1/audit?job=&since=&limit=&before=``: entries newest first; ``since``
  is a duration back from now (``1h``, ``7d``) or an ISO 8601 time; at most
  ``limit`` (1 to 1000, default 50) entries; ``next`` is the cursor for
  ``before`` when more may follow (a listing looks at 20,000 entries at most).
- ``GET /v1/jobs/NAME/versions?limit=``: the versions kept, newest first, without
  their specs (``spec_hash`` instead).
- ``GET /v1/jobs/NAME/versions/V``: one version with its spec.
- ``POST /v1/jobs/NAME/rollback`` ``{"to": V}`` (optional; default: the newest
  version that differs from the current spec), ``If-Match: <mod revision>``
  optional: a compare-and-swap like ``PUT``; a concurrent change is a 409.

Every input is bounded and checked: a bad value is a 4xx naming it, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from scheduler.audit import Actor, AuditEntry, list_entries
from scheduler.clip import quote
from scheduler.durations import parse_duration
from scheduler.master.principal import principal_of
from scheduler.model import NAME_RE, JobSpec
from scheduler.rollback import NoSuchVersion, NotRestorable, rollback
from scheduler.store import JobNotFound, JobStore
from scheduler.versions import MAX_VERSION, Version, get_version, list_versions

_CURSOR_RE = re.compile(r"[0-9]{16}-[0-9a-f]{8}")
MAX_SINCE_CHARS = 64

JobName = Annotated[str, Path(max_length=63)]
VersionNo = Annotated[int, Path(ge=1, le=MAX_VERSION)]


class AuditListOut(BaseModel):
    entries: list[AuditEntry]
    next: str | None = Field(None, description="pass as `before` for older entries")


class VersionListOut(BaseModel):
    job: str
    versions: list[dict[str, Any]]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(None, ge=1, le=MAX_VERSION, description="the version to restore")


class RollbackOut(BaseModel):
    job: str
    restored: int
    mod_revision: int
    changed: bool
    spec: JobSpec


def actor_of(request: Request) -> Actor:
    p = principal_of(request)
    return Actor(p.name, p.address)


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(422, f"invalid request: {field}: {message}")


def _name(name: str) -> str:
    if not NAME_RE.match(name):
        raise _unprocessable("name", f"{quote(name)} is not a valid job name")
    return name


def parse_since(text: str, now: datetime) -> datetime:
    """A duration back from ``now`` (``1h``) or an ISO 8601 time (UTC if no zone)."""
    if len(text) > MAX_SINCE_CHARS:
        raise _unprocessable("since", f"longer than {MAX_SINCE_CHARS} characters")
    try:
        return now - timedelta(seconds=min(parse_duration(text), 100 * 365 * 86400.0))
    except (ValueError, OverflowError):
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise _unprocessable(
            "since", f"expected a duration (1h, 7d) or an ISO 8601 time, got {quote(text)}"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def add_audit_routes(
    v1: APIRouter, store: JobStore, parse_if_match: Callable[[str | None], int | None]
) -> None:
    @v1.get("/audit", response_model=AuditListOut)
    async def audit(
        job: Annotated[str | None, Query(max_length=63)] = None,
        since: Annotated[str | None, Query(max_length=MAX_SINCE_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before: Annotated[str | None, Query(max_length=32)] = None,
    ) -> AuditListOut:
        """Changes newest first: who (token name), from where, what."""
        if job is not None:
            _name(job)
        if before is not None and not _CURSOR_RE.fullmatch(before):
            raise _unprocessable("before", "expected a cursor from `next`")
        start = parse_since(since, datetime.now(UTC)) if since else None
        entries, cursor = await list_entries(
            store.client, store.ks, job=job, since=start, limit=limit, before=before
        )
        return AuditListOut(entries=entries, next=cursor)

    @v1.get("/jobs/{name}/versions", response_model=VersionListOut)
    async def versions(
        name: JobName, limit: Annotated[int, Query(ge=1, le=1000)] = 20
    ) -> VersionListOut:
        """The definition history of a job, newest first (also of a deleted job)."""
        found = await list_versions(store.client, store.ks, _name(name), limit)
        if not found and await store.get_job(name) is None:
            raise JobNotFound(name)
        return VersionListOut(job=name, versions=[v.summary() for v in found])

    @v1.get("/jobs/{name}/versions/{version}", response_model=Version)
    async def version(name: JobName, version: VersionNo) -> Version:
        try:
            found = await get_version(store.client, store.ks, _name(name), version)
        except ValueError as exc:
            raise HTTPException(500, f"version {version} of job {name} is invalid: {exc}") from exc
        if found is None:
            raise HTTPException(404, f"version {version} of job {quote(name)} not found")
        return found

    @v1.post("/jobs/{name}/rollback", response_model=RollbackOut)
    async def rollback_job(
        name: JobName,
        request: Request,
        response: Response,
        body: RollbackIn | None = None,
        if_match: Annotated[str | None, Header()] = None,
    ) -> RollbackOut:
        """Restore an earlier version (a change: audited, and a new version)."""
        expect = parse_if_match(if_match)
        by = store.acting_as(actor_of(request))
        try:
            done = await rollback(by, _name(name), body.to if body else None, expect)
        except NoSuchVersion as exc:
            raise HTTPException(404, str(exc)) from exc
        except NotRestorable as exc:
            raise HTTPException(409, str(exc)) from exc
        response.headers["ETag"] = f'"{done.mod_revision}"'
        return RollbackOut(
            job=name,
            restored=done.restored,
            mod_revision=done.mod_revision,
            changed=done.changed,
            spec=done.spec,
        )

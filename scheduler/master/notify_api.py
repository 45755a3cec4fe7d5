"""``GET /v1/notifications``: recent notification deliveries and failures.

- ``job``: only this job's (a job name, else 422); ``limit``: 1 to 1000
  (default 50); ``before``: an ISO time, only deliveries last updated before it
  (the next page: the ``updated`` of the last one shown).
- Newest first. What is listed is bounded by retention (``notify.keep`` per
  job, ``master.keep_for``). Sink targets are shown redacted (a URL's path and
  query, which may hold a secret, never leave the master).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from scheduler.notify.deliveries import Delivery, recent
from scheduler.store import JobStore

JOB_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""The job name rule (scheduler.model.NAME_RE) in the regex dialect of the query validator."""


class NotificationListOut(BaseModel):
    notifications: list[Delivery]
    more: bool
    """True when older deliveries exist beyond this page."""
    complete: bool
    """False when there were more delivery records than one listing reads
    (20,000): name a job to see all of its."""


def add_notification_routes(router: APIRouter, store: JobStore) -> None:
    @router.get("/notifications", response_model=NotificationListOut)
    async def notifications(
        job: Annotated[str | None, Query(pattern=JOB_NAME, max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before: Annotated[str, Query(max_length=64)] = "",
    ) -> NotificationListOut:
        """Recent deliveries and failures, newest first."""
        found, complete = await recent(store.client, store.ks, job, limit + 1, before)
        return NotificationListOut(
            notifications=found[:limit], more=len(found) > limit, complete=complete
        )

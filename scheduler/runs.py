"""Run records: what happened to each (job, tick).

A record lives at ``<prefix>/runs/<job>/<run-id>``. Run ids start with the tick
in UTC (``20261123T070500Z-3f9c2a``), so keys sort by tick and "newest first" is
a reverse key scan. The claim transaction writes the first version (``running``
or ``skipped``); the release transaction writes the final one.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    LOST = "lost"
    SKIPPED = "skipped"
    MISSED = "missed"

    @property
    def final(self) -> bool:
        return self is not RunStatus.RUNNING

    @property
    def ok(self) -> bool:
        return self is RunStatus.SUCCEEDED


def new_run_id(tick: datetime, *, manual: bool = False) -> str:
    stamp = tick.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}Z-{'m' if manual else ''}{secrets.token_hex(3)}"


def tick_ms(tick: datetime) -> int:
    return round(tick.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


SKIPPED_FORBID = "previous run still active (concurrency: forbid)"
"""The message of a ``forbid`` tick skipped because its previous run is active."""


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job: str
    run_id: str
    tick: datetime
    manual: bool = False
    request_id: str = ""
    """The manual run request (``POST /v1/jobs/<job>/run``) this run answers."""
    status: RunStatus
    worker: str | None = None
    lease: int = 0
    attempt: int = 1
    fencing_token: int = 0
    start: datetime | None = None
    end: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""
    output_bytes: int = 0
    output_omitted: int = 0
    output_chunks: int = 0
    output_tail: str = ""

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        return cls.model_validate_json(data)

    @classmethod
    def started(
        cls,
        job: str,
        run_id: str,
        tick: datetime,
        *,
        worker: str,
        lease: int,
        start: datetime,
        manual: bool = False,
        request_id: str = "",
    ) -> RunRecord:
        """The first record of a run, written by its claim (``running``)."""
        return cls(
            job=job,
            run_id=run_id,
            tick=tick,
            manual=manual,
            request_id=request_id,
            status=RunStatus.RUNNING,
            worker=worker,
            lease=lease,
            start=start,
        )

    @classmethod
    def skipped(cls, started: RunRecord) -> RunRecord:
        """The record a ``forbid`` tick gets instead of ``started`` when the
        previous run is still active (written by the claim that lost to it)."""
        return started.model_copy(
            update={
                "status": RunStatus.SKIPPED,
                "start": None,
                "message": SKIPPED_FORBID,
            }
        )

    @classmethod
    def lost(
        cls,
        running: RunRecord,
        *,
        end: datetime,
        message: str,
        status: RunStatus = RunStatus.LOST,
    ) -> RunRecord:
        """The final record of a ``running`` run whose worker is gone, written by
        someone else: ``lost``, or ``killed`` when a kill request ended it."""
        return running.model_copy(update={"status": status, "end": end, "message": message})

    @classmethod
    def missed(
        cls,
        job: str,
        tick: datetime,
        message: str,
        *,
        worker: str | None,
        end: datetime | None = None,
    ) -> RunRecord:
        """The record of a tick that did not run (a fresh run id for the tick)."""
        return cls(
            job=job,
            run_id=new_run_id(tick),
            tick=tick,
            status=RunStatus.MISSED,
            worker=worker,
            end=end,
            message=message,
        )

    @staticmethod
    def status_of(data: bytes) -> str | None:
        """Only the ``status`` of a stored record, without a full parse (listings
        of many records); None when the value has none."""
        try:
            raw = json.loads(data)
        except ValueError:
            return None
        status = raw.get("status") if isinstance(raw, dict) else None
        return None if status is None else str(status)

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


class LockValue(BaseModel):
    """The value of ``lock/<job>``: who runs the job now."""

    model_config = ConfigDict(extra="ignore")

    worker: str
    run_id: str
    tick: datetime
    lease: int

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @staticmethod
    def run_id_of(data: bytes) -> str | None:
        """The run id a lock value names (lenient: None when it names none)."""
        try:
            raw = json.loads(data)
        except ValueError:
            return None
        run_id = raw.get("run_id") if isinstance(raw, dict) else None
        return run_id if isinstance(run_id, str) else None

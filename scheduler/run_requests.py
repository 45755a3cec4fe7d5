"""Requests about runs: the values of ``killer/<job>``, ``replace/<job>``,
``trigger/<job>/<request>`` and ``taken/<job>/<request>``, one model each.

- **Stop requests** have one shape for both of their keys:
  ``killer/<job>`` (a master: stop every run of the job, ``run_id`` absent) and
  ``replace/<job>`` (a worker replacing a ``replace`` job's run: stop that run
  only). The running worker reads both (:mod:`workers.worker`).
- **Manual-run requests** (``trigger/<job>/<request>``, written by a master) and
  the mark of the claim that took one (``taken/<job>/<request>``).

Reading is lenient: a value that is not a JSON object of the right shape
parses as ``None``; the reader decides what that means (a malformed kill
request still stops every run of its job, as it always did).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: bytes) -> M | None:
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _encode(fields: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


def _stamp(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


class StopRequest(BaseModel):
    """``killer/<job>`` and ``replace/<job>``: stop the job's runs (or one of them)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str | None = None
    """The run to stop; None: every run of the job (a kill)."""
    requested_at: datetime | None = None

    @classmethod
    def kill(cls, at: datetime) -> StopRequest:
        """A master's kill: every run of the job."""
        return cls(requested_at=at)

    @classmethod
    def replace(cls, run_id: str | None, at: datetime | None = None) -> StopRequest:
        """A worker replacing a run asks its holder to stop that run."""
        return cls(run_id=run_id, requested_at=at)

    def encode(self) -> bytes:
        return _encode({"requested_at": _stamp(self.requested_at), "run_id": self.run_id})

    @classmethod
    def parse(cls, data: bytes) -> StopRequest | None:
        return _parse(cls, data)


class RunRequest(BaseModel):
    """``trigger/<job>/<request>``: run the job once now (a manual run)."""

    model_config = ConfigDict(extra="ignore")

    request_id: str
    requested_at: datetime | None = None

    def encode(self) -> bytes:
        return _encode({"request_id": self.request_id, "requested_at": _stamp(self.requested_at)})

    @classmethod
    def parse(cls, data: bytes) -> RunRequest | None:
        return _parse(cls, data)


class Taken(BaseModel):
    """``taken/<job>/<request>``: the worker whose claim took a manual-run request."""

    model_config = ConfigDict(extra="ignore")

    worker: str

    def encode(self) -> bytes:
        return _encode({"worker": self.worker})

    @classmethod
    def parse(cls, data: bytes) -> Taken | None:
        return _parse(cls, data)

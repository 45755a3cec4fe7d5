"""The worker registration: the value of ``workers/<id>``, one model for all.

Written by the worker on its session lease (:mod:`workers.membership`, every
few seconds); read by its peers (:mod:`workers.state`: who goes first, whose
clock counts), by the master (:meth:`scheduler.store.JobStore.list_workers`:
the API, the UI, ``etcron doctor``) and by the CLI (through the API).

Reading is lenient, as for every value found in etcd (a newer or older worker,
or a hand-written key, must never break a reader):

- a value that is not a JSON object, or has no ``id`` (and none is given from
  its key), parses as ``None``;
- a field of the wrong type reads as absent (its default), and is named in
  :attr:`WorkerRegistration.invalid` so a reader that decides something with
  it (the peers) can skip the registration;
- fields this version does not know are kept (``extra``) and shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator


class WorkerRegistration(BaseModel):
    """What a worker says of itself. Fields a registration lacks are None or
    their default; :meth:`shown` gives only the fields it has."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    # the order of the fields is the order of the keys written (encode)
    id: str
    host: str | None = None
    pid: int | None = None
    labels: dict[str, str] = {}
    capacity: int | None = None
    """Most runs at once (0: no limit; None: not said)."""
    running: int | None = None
    version: str | None = None
    clock: float | None = None
    """The worker's wall clock (unix seconds) when it wrote this."""
    skew: float | None = None
    """Its clock minus the median of its peers' clocks, in seconds (its own estimate)."""
    clock_ok: bool = True
    """Its own verdict on its clock: False, it does not claim (``workers.cluster_time``)."""
    clock_known: bool = True
    """False until it has compared its clock with every peer's (just started)."""
    draining: bool = False
    jobs: int | None = None
    revision: int | None = None
    lease: int = 0

    _invalid: list[str] = PrivateAttr(default_factory=list)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @property
    def invalid(self) -> list[str]:
        """The fields that had a value of the wrong type (read as absent)."""
        return list(self._invalid)

    def encode(self) -> bytes:
        """The stored value: a JSON object of every field."""
        return json.dumps(self.model_dump()).encode()

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any], *, worker_id: str | None = None
    ) -> WorkerRegistration | None:
        """A registration from decoded JSON (lenient: see the module doc); None without an id."""
        data = dict(raw)
        if worker_id is not None:
            data.setdefault("id", worker_id)
        invalid: list[str] = []
        for _ in range(2):
            try:
                reg = cls.model_validate(data)
            except ValidationError as exc:
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
                if not bad or "id" in bad:
                    return None
                invalid.extend(sorted(bad))
                data = {k: v for k, v in data.items() if k not in bad}
                continue
            reg._invalid = invalid
            return reg
        return None

    @classmethod
    def lenient(cls, raw: Mapping[str, Any]) -> WorkerRegistration:
        """A registration as the API or the store shows it (a mapping), never an error:
        one without a usable id is named ``?`` (for display and checks, not the peers)."""
        reg = cls.from_mapping(raw, worker_id="?")
        return reg if reg is not None else cls(id="?")

    @classmethod
    def parse(cls, data: bytes, *, worker_id: str | None = None) -> WorkerRegistration | None:
        """The registration stored as ``data``, or None when it is not one (see the module doc).

        ``worker_id`` (from the key) stands in for a missing ``id``."""
        try:
            raw = json.loads(data)
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None
        return cls.from_mapping(raw, worker_id=worker_id)

    def shown(self) -> dict[str, Any]:
        """The fields the registration has (and unknown ones it carries), as JSON values."""
        return self.model_dump(mode="json", exclude_unset=True)

"""The errors the master's store raises on purpose (:mod:`scheduler.store`)."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.clip import quote


class StoreError(Exception):
    """Base class of the errors this module raises on purpose."""


class ConflictError(StoreError):
    """A compare-and-swap failed: someone changed the job since it was read."""

    def __init__(self, message: str, jobs: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.jobs = list(jobs)


class JobNotFound(StoreError, LookupError):
    """The job does not exist in etcd."""

    def __init__(self, name: str) -> None:
        super().__init__(f"job {quote(name)} not found")
        self.name = name


class CorruptValue(StoreError, ValueError):
    """A value in etcd is not what it should be (reported, never fatal)."""

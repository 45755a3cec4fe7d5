"""The errors of the etcd layer, and how gRPC and etcd3aio failures map onto them.

Callers catch these, never the client library's own exceptions:
:class:`EtcdUnavailable` is worth retrying (:class:`EtcdAmbiguous`: a write sent
once may have committed), :class:`EtcdAuthError` needs credentials fixed, any
other :class:`EtcdError` is a request bug.
"""

from __future__ import annotations

import etcd3aio
import grpc

__all__ = [
    "EtcdAmbiguous",
    "EtcdAuthError",
    "EtcdCompacted",
    "EtcdError",
    "EtcdNoSpace",
    "EtcdTooLarge",
    "EtcdUnavailable",
    "map_error",
]


class EtcdError(Exception):
    """etcd refused or could not be reached."""


class EtcdUnavailable(EtcdError):
    """No answer from the cluster (network, no leader, deadline)."""


class EtcdAmbiguous(EtcdUnavailable):
    """A write was sent but no reply came back: it may or may not have committed."""


class EtcdAuthError(EtcdError):
    """Authentication failed or the user lacks a permission."""


class EtcdNoSpace(EtcdUnavailable):
    """etcd refuses writes: its database reached its quota (the NOSPACE alarm)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}: etcd is out of space (NOSPACE alarm: the database reached its quota, "
            "--quota-backend-bytes); writes are refused until old data is deleted, the "
            "history compacted and defragmented, and the alarm disarmed (docs/operations.md)"
        )


class EtcdTooLarge(EtcdError):
    """A response was larger than the client may receive (``MAX_RECEIVE``): ask for less."""


class EtcdCompacted(EtcdError):
    """A revision that was asked for has been compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


_TRANSPORT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


def map_error(exc: BaseException, what: str) -> EtcdError:
    """Unavailable: worth retrying. Auth: fix credentials. Anything else: a request bug."""
    if isinstance(exc, (etcd3aio.EtcdUnauthenticatedError, etcd3aio.EtcdPermissionDeniedError)):
        return EtcdAuthError(f"{what}: {exc}")
    if isinstance(exc, grpc.aio.AioRpcError):
        code, details = exc.code(), exc.details() or ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return EtcdAuthError(f"{what}: {details}")
        if "authentication failed" in details or "invalid auth token" in details:
            return EtcdAuthError(f"{what}: {details}")
        if code == grpc.StatusCode.OUT_OF_RANGE:
            return EtcdCompacted(0)
        if "database space exceeded" in details:
            return EtcdNoSpace(what)  # a definite refusal, not a member failure
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            # our own receive limit, not the member's health: never a reason to fail over
            return EtcdTooLarge(f"{what}: {details}")
        if code in _RETRYABLE:
            return EtcdUnavailable(f"{what}: {code.name} {details}".strip())
        return EtcdError(f"{what}: {code.name} {details}".strip())
    if isinstance(exc, (TimeoutError, etcd3aio.EtcdError)):
        return EtcdUnavailable(f"{what}: {exc or type(exc).__name__}")
    return EtcdError(f"{what}: {exc}")


TRANSPORT = _TRANSPORT
"""Status codes that say the member did not answer (not that it refused)."""

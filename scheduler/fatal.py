"""A daemon's fatal error: one line on stderr and an exit code, not a traceback.

``etcron master`` and ``etcron worker`` end through :func:`report`:

- exit 2: the configuration must change: a :class:`ConfigError` (no token, a
  busy port, an unreadable TLS or password file, a ``worker.id`` a live worker
  holds);
- exit 3: etcd refused the credentials or a permission (or another etcd error);
- exit 1: anything else, a bug: its traceback is logged at level ``error``.

A known error's traceback is logged at level ``debug`` only
(``log.level: debug`` or ``ETCRON_LOG__LEVEL=debug`` shows it). Errors raised
inside a ``TaskGroup`` arrive wrapped in an ``ExceptionGroup``: the leaves
are what is reported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from scheduler.config import ConfigError
from scheduler.etcd.client import EtcdAuthError, EtcdError

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_ETCD = 3


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups; ``exc`` itself otherwise."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def classify(exc: BaseException, what: str) -> tuple[str, int] | None:
    """(one-line message, exit code) for a known fatal error; None for a bug."""
    found = list(leaves(exc))
    for leaf in found:
        if isinstance(leaf, ConfigError):
            return str(leaf), EXIT_CONFIG
    for leaf in found:
        if isinstance(leaf, EtcdAuthError):
            return (
                f"etcd refused the {what}'s credentials or permissions ({leaf}); check "
                "etcd.username, etcd.password or etcd.password_file, and the user's role",
                EXIT_ETCD,
            )
    for leaf in found:
        if isinstance(leaf, EtcdError):
            return f"etcd: {leaf}", EXIT_ETCD
    return None


def report(exc: BaseException, log: Any, what: str) -> int:
    """Log ``exc`` (traceback at debug, or at error for a bug), print one
    ``error:`` line on stderr, return the exit code."""
    known = classify(exc, what)
    if known is not None:
        log.debug("fatal error", exc_info=exc)
        message, code = known
    else:
        log.error("fatal error", exc_info=exc)
        first = next((e for e in leaves(exc) if isinstance(e, Exception)), exc)
        message = f"the {what} stopped on an unexpected error: {type(first).__name__}: {first}"
        code = EXIT_FAILURE
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code

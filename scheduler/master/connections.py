"""How many connections the master holds, and which one to close to make room.

Rules:

- At most ``max_connections`` are open. A new connection beyond that closes
  the connection that has been waiting longest without a request being
  served (a fresh one that sent nothing yet, half a request head, or an idle
  keep-alive one); the newcomer is kept. Only when every open connection has
  a request being served is the newcomer refused (a ``503`` and closed).
  So an attacker holding idle sockets cannot lock out ``/v1/health``: its
  sockets are the oldest idle ones, and go first.
- Nothing is logged per connection: at most one warning per ``warn_every``
  seconds, with the counts since the previous one.
- :func:`connection_budget` keeps ``max_connections`` and the accept batch
  within the process's file descriptor limit (raising the soft limit when the
  hard one allows), so the master never fails an ``accept()`` or an etcd call
  for want of descriptors.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger("etcron.master.http")


class Closable(Protocol):
    def evict(self) -> None:
        """Close now: the slot is needed."""


class ConnectionTable:
    """The open connections, in the order they became idle; see the module rules."""

    def __init__(
        self,
        max_connections: int,
        *,
        warn_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.warn_every = warn_every
        self._clock = clock
        self._open: set[Closable] = set()
        self._idle: dict[Closable, None] = {}  # insertion order: longest idle first
        self.evicted = 0
        self.refused = 0
        self._since_warning = (0, 0)
        self._warned_at: float | None = None

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Closable) -> bool:
        """Count a new connection in (idle); False: refuse it, every slot is serving."""
        while len(self._open) >= self.max_connections:
            if not self._idle:
                self.refused += 1
                self._warn()
                return False
            victim = next(iter(self._idle))
            self.release(victim)
            self.evicted += 1
            victim.evict()
            self._warn()
        self._open.add(conn)
        self._idle[conn] = None
        return True

    def busy(self, conn: Closable) -> None:
        """A request is being served on ``conn``: not to be evicted."""
        self._idle.pop(conn, None)

    def idle(self, conn: Closable) -> None:
        """``conn`` waits for its next request (it goes to the end of the line)."""
        if conn in self._open:
            self._idle.pop(conn, None)
            self._idle[conn] = None

    def release(self, conn: Closable) -> None:
        """``conn`` is closed (or closing): its slot is free. Idempotent."""
        self._open.discard(conn)
        self._idle.pop(conn, None)

    def _warn(self) -> None:
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < self.warn_every:
            return
        evicted, refused = self._since_warning
        log.warning(
            "connection limit reached: idle connections closed to make room, new ones "
            "refused while every connection serves a request",
            max_connections=self.max_connections,
            idle_closed=self.evicted - evicted,
            refused=self.refused - refused,
            interval_s=None if self._warned_at is None else round(now - self._warned_at, 1),
        )
        self._warned_at = now
        self._since_warning = (self.evicted, self.refused)


FD_RESERVE = 64
"""Descriptors kept for everything but API connections (etcd channels, logs, stdio)."""


def _fds_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16


def connection_budget(max_connections: int, max_batch: int = 512) -> tuple[int, int, int]:
    """(connections the master may hold, accept batch, soft descriptor limit in force).

    The accept batch is the listen backlog and how many connections are
    accepted in one turn of the event loop, before the excess ones are closed:
    twice it is kept free, with ``FD_RESERVE`` and the descriptors in use now.
    A large backlog queues a burst of connections instead of dropping SYNs
    (which costs a legitimate client a 1 s retransmit). The soft
    ``RLIMIT_NOFILE`` is raised towards the hard one if all this does not fit;
    if it still does not, the batch shrinks (to a quarter of the room, at
    least 16), then the connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = _fds_in_use()
    need = in_use + FD_RESERVE + 2 * max_batch + max_connections
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max_connections, max_batch, soft
    room = soft - in_use - FD_RESERVE
    batch = max(16, min(max_batch, room // 4))
    return max(0, min(max_connections, room - 2 * batch)), batch, soft

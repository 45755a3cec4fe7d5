"""Which member a request goes to, and failover (gray failures).

A member that stops answering while its sockets stay
open (SIGSTOP, a stuck disk) is not seen by TCP, and gRPC's round robin keeps
sending it a share of the requests, each of which hangs to its deadline. So the
client owns the choice of member:

- One gRPC channel per endpoint. Unary calls go to one *active* member.
- A monitor probes the active member with the Maintenance ``Status`` RPC
  (local to the member: it answers during an election and without quorum),
  deadline :data:`PROBE_TIMEOUT`: within :data:`PROBE_INTERVAL` once a request
  has been waiting on it for :data:`SLOW_REQUEST` (requests take milliseconds
  when all is well), and every :data:`IDLE_PROBE` otherwise. A busy worker so
  pays for a probe only when something is slow. A member that does not
  answer, or answers without a leader while another one has a leader, is left:
  every member is probed and the best one becomes active. A failed request
  (deadline, unavailable) probes at once instead of waiting for the next turn.
- Requests in flight on a member that is left are aborted at once (the caller
  sees :class:`EtcdUnavailable`, or :class:`EtcdAmbiguous` for a write sent
  once), so callers re-send to the new member instead of waiting out the
  deadline. Idempotent calls are retried on the new member within their deadline.
- When the active member reports a new raft term, requests that were in flight
  before it are aborted the same way: a proposal forwarded to a leader that froze
  is never answered (etcd does not re-forward it to the new leader).
- Streams (the session keepalive, watches) take their member from :meth:`pick`,
  detect a stall themselves (no answer within :data:`PROBE_TIMEOUT`), report it
  with :meth:`stalled` and move; they register their waits with :meth:`scope`, so
  the two aborts above reach them too.
- gRPC keepalive pings every :data:`KEEPALIVE_TIME_MS` while calls are open: it
  tears down a transport that stopped answering (a backstop: the probes decide
  routing). etcd refuses pings more often than ``--grpc-keepalive-min-time``
  (5 s by default) and any ping without an open stream (GOAWAY
  ``too_many_pings``), hence 10 s and no pings without calls.

:class:`MemberRouter` keeps these rules; :class:`scheduler.etcd.client.EtcdClient`
is a router that adds the etcd API (reads, writes, leases) on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import etcd3aio
import grpc
import structlog

from scheduler.config import EtcdConfig
from scheduler.etcd.errors import (
    TRANSPORT,
    EtcdAmbiguous,
    EtcdError,
    EtcdNoSpace,
    EtcdUnavailable,
    map_error,
)
from scheduler.etcd.members import (
    HEALTHY,
    IDLE_PROBE,
    NO_LEADER,
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    SLOW_REQUEST,
    UNRESPONSIVE,
    Member,
    Scope,
    open_members,
)

__all__ = ["MemberRouter"]

log = structlog.get_logger("etcron.etcd")

T = TypeVar("T")


class MemberRouter:
    """The members of one cluster, the active one, and calls routed to it with
    failover (the rules above)."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.timeout = config.request_timeout
        self._members: list[Member] = open_members(config)
        # spread clients over the members; the first probe may move it
        self._active = random.randrange(len(self._members))
        self._term = 0
        self._kick = asyncio.Event()
        self._monitor_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self.switches = 0
        """How many times the active member changed."""
        self.aborts = 0
        """Requests and stream waits cut short by failover."""
        self.probes = 0
        """Status probes sent."""
        self.observe: Callable[[str, float, bool], None] | None = None
        """Told ``(what, seconds, ok)`` when a request ends (``scheduler.metrics``)."""

    @property
    def active(self) -> Member:
        """The member unary calls go to."""
        return self._members[self._active]

    @property
    def members(self) -> list[Member]:
        return list(self._members)

    @property
    def raw(self) -> Member:
        """The active member's service wrappers (admin tools and tests)."""
        return self.active

    def pick(self, avoid: Member | None = None) -> Member:
        """The member to open a stream on: the active one, unless ``avoid`` (a
        member that just stalled a stream) is it and another one looks as good."""
        return self._best(avoid)

    def stalled(self, member: Member) -> None:
        """A stream on ``member`` got no answer in time: probe it now."""
        if member is self.active:
            self._kick.set()
        elif not self._closed:
            task = asyncio.create_task(self._check_other(member))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def scope(self, member: Member, when: float | None, *, via_leader: bool = True) -> Scope:
        """A deadline (loop time) for a wait on ``member`` that failover can cut short."""
        return Scope(member, when, via_leader)

    def _best(self, avoid: Member | None = None) -> Member:
        n = len(self._members)

        def rank(m: Member) -> tuple[float, int]:
            score = m.state - (1.5 if m is avoid else 0.0)
            return (-score, (m.index - self._active) % n)

        return min(self._members, key=rank)

    async def _probe(self, m: Member, timeout: float) -> None:
        """Ask ``m`` for its status; update its state (and abort on a new term)."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.probes += 1
        try:
            resp = await m.maintenance.status(timeout=timeout)
        except (TimeoutError, etcd3aio.EtcdConnectionError, etcd3aio.EtcdTransientError):
            m.state = UNRESPONSIVE
            return
        except grpc.aio.AioRpcError as exc:
            # any other answer (auth, say) still proves the member is responsive
            m.state = UNRESPONSIVE if exc.code() in TRANSPORT else HEALTHY
            return
        except etcd3aio.EtcdError:
            m.state = HEALTHY
            return
        m.leader, m.term = int(resp.leader), int(resp.raftTerm)
        m.state = HEALTHY if m.leader else NO_LEADER
        if m.leader and m.term > self._term:
            if self._term:
                self._abort(
                    lambda s: s.via_leader and s.started < sent,
                    f"new etcd leader (term {m.term})",
                )
            self._term = m.term

    async def _probe_all(self, timeout: float) -> None:
        await asyncio.gather(*(self._probe(m, timeout) for m in self._members))

    def _abort(
        self, which: Callable[[Scope], bool], why: str, member: Member | None = None
    ) -> None:
        for m in [member] if member is not None else self._members:
            for s in list(m.scopes):
                if which(s):
                    s.abort(why)
                    self.aborts += 1

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            kicked = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL):
                    await self._kick.wait()
                    kicked = True
            self._kick.clear()
            now = loop.time()
            if not (kicked or now - last >= IDLE_PROBE or self._slow(now)):
                continue
            last = now
            try:
                await self._check()
            except Exception as exc:  # never let the monitor die
                log.warning("etcd member probe failed", error=repr(exc)[:200])

    def _slow(self, now: float) -> bool:
        """Has a request (not a stream) been waiting on the active member too long?"""
        return any(s.via_leader and now - s.started >= SLOW_REQUEST for s in self.active.scopes)

    async def _check(self) -> None:
        m = self.active
        await self._probe(m, PROBE_TIMEOUT)
        if m.state == HEALTHY or len(self._members) == 1:
            return
        await asyncio.gather(*(self._probe(x, PROBE_TIMEOUT) for x in self._members if x is not m))
        if m is not self.active:
            return
        best = self._best()
        if best.state > m.state:
            self._switch(best)

    async def _check_other(self, m: Member) -> None:
        await self._probe(m, PROBE_TIMEOUT)
        if m.state == UNRESPONSIVE:
            self._abort(lambda s: True, f"etcd member {m.endpoint} unresponsive", m)

    def _switch(self, to: Member) -> None:
        old = self.active
        self._active = to.index
        self.switches += 1
        why = "unresponsive" if old.state == UNRESPONSIVE else "without a leader"
        log.warning(f"etcd member {why}, switching", member=old.endpoint, to=to.endpoint)
        self._abort(lambda s: True, f"etcd member {old.endpoint} {why}", old)

    async def _call(
        self,
        what: str,
        fn: Callable[[Member, float], Awaitable[T]],
        *,
        once: bool = False,
        timeout: float | None = None,
    ) -> T:
        """One unary call on the active member, within one deadline.

        ``once``: never resend (a lost reply raises :class:`EtcdAmbiguous`);
        otherwise an unavailable member is retried, on the new member after a
        failover, until the deadline.
        """
        if self.observe is None:
            return await self._call_on(what, fn, once=once, timeout=timeout)
        sent = time.perf_counter()
        try:
            result = await self._call_on(what, fn, once=once, timeout=timeout)
        except EtcdError:
            self.observe(what, time.perf_counter() - sent, False)
            raise
        self.observe(what, time.perf_counter() - sent, True)
        return result

    async def _call_on(
        self,
        what: str,
        fn: Callable[[Member, float], Awaitable[T]],
        *,
        once: bool,
        timeout: float | None,
    ) -> T:
        loop = asyncio.get_running_loop()
        end = loop.time() + (timeout or self.timeout)
        delay = 0.05
        while True:
            m = self.active
            scope = Scope(m, end, True)
            try:
                async with scope:
                    return await fn(m, max(0.001, end - loop.time()))
            except Exception as exc:
                err = map_error(exc, what)
                if scope.aborted:
                    err = EtcdUnavailable(f"{what}: {scope.aborted}")
                if not isinstance(err, EtcdUnavailable) or isinstance(err, EtcdNoSpace):
                    raise err from exc
                if not scope.aborted:
                    self.stalled(m)
                if once:
                    raise EtcdAmbiguous(str(err)) from exc
                if end - loop.time() <= delay:
                    raise err from exc
                if self.active is m:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.4)

    # reads ----------------------------------------------------------------

"""The leader master's notification service.

Rules:

- Runs only while this master leads (``Housekeeper.is_leader``): on becoming
  leader it lists the jobs and the run records and watches both
  (:class:`~scheduler.etcd.listwatch.ListWatch`: resumed from the last revision
  after a break, listed again after a compaction); on losing leadership every
  task stops. Nothing is read from a cursor: a record is delivered once because
  its delivery key exists (:mod:`scheduler.notify.deliveries`), so a new leader,
  a resumed watch or a fresh list never sends it again.
- Records seen in a list (start-up, compaction) notify only when they are newer
  than ``notify.max_age`` (by their end, start or tick); older ones only feed
  ``recovered``'s memory.
- Never blocks scheduling or housekeeping: it runs in its own tasks; notices
  wait in a queue of ``notify.queue_size`` (a full queue drops the notice, logs
  and counts it); ``notify.concurrency`` deliveries run at once; every HTTP
  call is bounded by ``notify.timeout``, SMTP by ``notify.smtp.timeout``.
- Retries: at most ``notify.attempts`` attempts, ``notify.backoff`` doubling up
  to ``notify.max_backoff`` between them; then ``failed``.
- Rate: at most ``notify.rate_per_job`` deliveries per job per
  ``notify.rate_interval``; the rest are recorded ``rate_limited``.
- Every outcome is logged and counted (``etcron_notifications_total{sink_kind,outcome}``:
  delivered, failed, retried, rate_limited, dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import structlog

from scheduler.clock import Clock
from scheduler.config import Config
from scheduler.etcd.client import EtcdClient, EtcdError, op_delete
from scheduler.etcd.listwatch import Batch, EventKind, ListWatch, Snapshot
from scheduler.keyspace import Keyspace
from scheduler.model import JobSpec
from scheduler.notify import deliveries, sinks
from scheduler.notify.deliveries import Claimed, Delivery, Outcome
from scheduler.notify.events import EventState, Notice, raised
from scheduler.notify.rules import Event, NotifyRule, redact, rules_for
from scheduler.runs import RunRecord
from scheduler.signing import spec_bytes

log = structlog.get_logger("etcron.notify")

Count = Callable[[str, str], None]
"""Told (sink_kind, outcome) for every outcome (the Prometheus counter)."""
LEADER_POLL = 0.2
OVERRAN_EVERY = 1.0
PRUNE_BATCH = 100


class _NoLongerLeader(Exception):
    pass


class Notifier:
    def __init__(
        self,
        client: EtcdClient,
        ks: Keyspace,
        config: Config,
        *,
        identity: str,
        is_leader: asyncio.Event,
        clock: Clock | None = None,
        count: Count | None = None,
    ) -> None:
        self.client = client
        self.ks = ks
        self.cfg = config.notify
        self.keep_for = config.master.keep_for
        self.prune_every = config.master.housekeeping_interval
        self.identity = identity
        self.is_leader = is_leader
        self.clock = clock or Clock()
        self._count = count
        self.jobs: dict[str, JobSpec] = {}
        self.state = EventState()
        self.queue: asyncio.Queue[Notice] = asyncio.Queue(self.cfg.queue_size)
        self._sent: dict[str, deque[float]] = {}
        self._overran: set[tuple[str, str, str]] = set()
        self._done: set[str] = set()
        """Delivery keys that exist, while a list is taken in."""
        try:
            self.secret = self.cfg.resolved_secret()
        except OSError as exc:
            log.error("notify.secret_file: cannot read; webhooks will fail", error=exc.strerror)
            self.secret = None
        if self.secret is None and any(r.webhook for r in self.cfg.defaults):
            log.warning(
                "notify.defaults has webhook rules but no notify.secret_file: "
                "they will fail (webhooks are never sent unsigned)"
            )

    def count(self, kind: str, outcome: str) -> None:
        if self._count is not None:
            self._count(kind, outcome)

    async def run(self) -> None:
        """Serve while leader, forever (cancel to stop)."""
        while True:
            await self.is_leader.wait()
            try:
                await self._serve()
            except* _NoLongerLeader:
                log.info("notifications: no longer leader, stopped")
            except* EtcdError as group:
                log.warning("notifications: etcd error, restarting", error=str(group.exceptions[0]))
                await asyncio.sleep(1)
            except* Exception:
                # a bug here must not take the master's housekeeping down with it
                log.exception("notifications stopped with an error; restarting in 5s")
                await asyncio.sleep(5)

    async def _serve(self) -> None:
        self.state.reset()
        self.jobs.clear()
        self._overran.clear()
        while not self.queue.empty():
            self.queue.get_nowait()
        jobs_ready = asyncio.Event()
        async with (
            httpx.AsyncClient(
                timeout=self.cfg.timeout, follow_redirects=False, trust_env=False
            ) as http,
            asyncio.TaskGroup() as tg,
        ):
            tg.create_task(self._watch_leader())
            tg.create_task(self._watch_jobs(jobs_ready))
            tg.create_task(self._watch_runs(jobs_ready))
            tg.create_task(self._overran_timer())
            tg.create_task(self._prune_timer())
            for _ in range(self.cfg.concurrency):
                tg.create_task(self._deliverer(http))

    async def _watch_leader(self) -> None:
        while True:  # (the leader flag has no "cleared" event)
            if not self.is_leader.is_set():
                raise _NoLongerLeader()
            await asyncio.sleep(LEADER_POLL)

    # what happened -------------------------------------------------------------

    async def _watch_jobs(self, ready: asyncio.Event) -> None:
        async for item in ListWatch(self.client, self.ks.jobs):
            if isinstance(item, Snapshot):
                self.jobs.clear()
                for kv in item.kvs.values():
                    self._job_put(kv.key, kv.value)
                ready.set()
                continue
            for ev in item.events:
                if ev.kind is EventKind.PUT:
                    self._job_put(ev.key, ev.kv.value)
                else:
                    self.jobs.pop(Keyspace.tail(ev.key, self.ks.jobs), None)

    def _job_put(self, key: str, value: bytes) -> None:
        with contextlib.suppress(ValueError):
            spec = JobSpec.from_json(spec_bytes(value))  # signed or not
            self.jobs[spec.name] = spec

    async def _watch_runs(self, jobs_ready: asyncio.Event) -> None:
        await jobs_ready.wait()
        async for item in ListWatch(self.client, self.ks.runs):
            if isinstance(item, Snapshot):
                self.state.reset()
                horizon = self.clock.now() - timedelta(seconds=self.cfg.max_age)
                # what was delivered already is not even queued (a new leader's
                # first list would otherwise fill the queue with it)
                done, _ = await self.client.get_prefix(self.ks.notifications, keys_only=True)
                self._done = {kv.key for kv in done}
                for rec in sorted(self._records(item), key=lambda r: r.run_id):
                    self.take(rec, notify=_when(rec) >= horizon)
                self._done = set()
                continue
            for ev in item.events:
                if ev.kind is EventKind.PUT:
                    for rec in self._records(Batch(item.revision, [ev])):
                        self.take(rec)

    @staticmethod
    def _records(item: Snapshot | Batch) -> list[RunRecord]:
        kvs = item.kvs.values() if isinstance(item, Snapshot) else (e.kv for e in item.events)
        out = []
        for kv in kvs:
            with contextlib.suppress(ValueError):
                out.append(RunRecord.from_json(kv.value))
        return out

    def rules(self, job: str) -> list[NotifyRule]:
        spec = self.jobs.get(job)
        return rules_for(spec.notify if spec is not None else None, self.cfg.defaults)

    def take(self, rec: RunRecord, *, notify: bool = True) -> None:
        """A record was written: queue the notices it raises."""
        previous_bad = self.state.see(rec)
        if not notify:
            return
        now = self.clock.now()
        for rule in self.rules(rec.job):
            for event in raised(rec, rule, previous_bad=previous_bad, now=now):
                if event is Event.OVERRAN:
                    key = (rec.job, rec.run_id, rule.sink_id)
                    if key in self._overran:
                        continue
                    self._overran.add(key)
                self.offer(Notice(event, rule, rec))
        if rec.status.final:
            self._overran = {k for k in self._overran if k[:2] != (rec.job, rec.run_id)}

    def offer(self, n: Notice) -> None:
        key = self.ks.notification(n.job, n.record.run_id, n.event.value, n.rule.sink_id)
        if key in self._done:
            return
        try:
            self.queue.put_nowait(n)
        except asyncio.QueueFull:
            self.count(n.rule.sink[0], "dropped")
            log.warning(
                "notification dropped: the queue is full",
                job=n.job,
                run=n.record.run_id,
                event=n.event.value,
                queue_size=self.cfg.queue_size,
            )

    async def _overran_timer(self) -> None:
        """Runs still running past a rule's ``overran``: checked every second."""
        while True:
            await asyncio.sleep(OVERRAN_EVERY)
            for rec in list(self.state.running.values()):
                if any(r.overran is not None for r in self.rules(rec.job)):
                    self.take_running(rec)

    def take_running(self, rec: RunRecord) -> None:
        now = self.clock.now()
        for rule in self.rules(rec.job):
            if rule.overran is None:
                continue
            key = (rec.job, rec.run_id, rule.sink_id)
            if key in self._overran:
                continue
            if Event.OVERRAN in raised(rec, rule, previous_bad=None, now=now):
                self._overran.add(key)
                self.offer(Notice(Event.OVERRAN, rule, rec))

    # delivering ----------------------------------------------------------------

    async def _deliverer(self, http: httpx.AsyncClient) -> None:
        while True:
            n = await self.queue.get()
            await self.deliver(http, n)

    def _allowed(self, job: str) -> bool:
        now = time.monotonic()
        sent = self._sent.setdefault(job, deque())
        while sent and sent[0] <= now - self.cfg.rate_interval:
            sent.popleft()
        if len(sent) >= self.cfg.rate_per_job:
            return False
        sent.append(now)
        return True

    async def deliver(self, http: httpx.AsyncClient, n: Notice) -> None:
        kind, target = n.rule.sink
        now = self.clock.now()
        d = Delivery(
            job=n.job,
            run_id=n.record.run_id,
            event=n.event.value,
            sink_kind=kind,
            sink=redact(target),
            sink_id=n.rule.sink_id,
            status=Outcome.PENDING,
            created=now,
            updated=now,
            master=self.identity,
        )
        claimed, d = await deliveries.claim(self.client, self.ks, d, self.identity)
        if claimed is Claimed.NOT_LEADER:
            raise _NoLongerLeader()
        if claimed is Claimed.DONE:
            return
        bound = log.bind(job=n.job, run=d.run_id, event=d.event, sink=d.sink, sink_kind=kind)
        if not self._allowed(n.job):
            await self._finish(d, Outcome.RATE_LIMITED, "over notify.rate_per_job")
            bound.warning("notification rate-limited", rate_per_job=self.cfg.rate_per_job)
            return
        key = Keyspace.tail(
            self.ks.notification(d.job, d.run_id, d.event, d.sink_id), self.ks.notifications
        )
        delay = self.cfg.backoff
        while True:
            d = d.model_copy(update={"attempts": d.attempts + 1})
            try:
                await self._send(http, n, key)
            except sinks.SinkError as exc:
                if d.attempts >= self.cfg.attempts:
                    await self._finish(d, Outcome.FAILED, str(exc))
                    bound.warning("notification failed", attempts=d.attempts, error=str(exc))
                    return
                self.count(kind, "retried")
                bound.info(
                    "notification attempt failed, retrying",
                    attempt=d.attempts,
                    error=str(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.max_backoff)
                continue
            await self._finish(d, Outcome.DELIVERED, "")
            bound.info("notification delivered", attempts=d.attempts)
            return

    async def _send(self, http: httpx.AsyncClient, n: Notice, key: str) -> None:
        kind, target = n.rule.sink
        if kind == "webhook":
            await sinks.webhook(
                http,
                target,
                n,
                secret=self.secret,
                delivery=key,
                now=self.clock.time(),
                tail_bytes=self.cfg.output_tail,
            )
        elif kind == "slack":
            await sinks.slack(http, target, n)
        else:
            await sinks.email(self.cfg.smtp, target, n, self.cfg.output_tail)

    async def _finish(self, d: Delivery, outcome: Outcome, error: str) -> None:
        done = d.model_copy(update={"status": outcome, "error": error, "updated": self.clock.now()})
        self.count(d.sink_kind, outcome.value)
        if not await deliveries.finish(self.client, self.ks, done, self.identity):
            raise _NoLongerLeader()

    # retention -----------------------------------------------------------------

    async def _prune_timer(self) -> None:
        while True:
            await asyncio.sleep(self.prune_every)
            await self.prune()

    async def prune(self) -> int:
        kvs, _ = await self.client.get_prefix(self.ks.notifications)
        horizon = self.clock.now() - timedelta(seconds=self.keep_for)
        doomed = deliveries.expired(kvs, self.ks, self.cfg.keep, horizon)
        for i in range(0, len(doomed), PRUNE_BATCH):
            await self.client.txn([], [op_delete(k) for k in doomed[i : i + PRUNE_BATCH]])
        return len(doomed)


def _when(rec: RunRecord) -> datetime:
    return rec.end or rec.start or rec.tick

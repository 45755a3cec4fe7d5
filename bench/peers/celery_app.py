"""The Celery app of the Celery + RedBeat peer (imported by beat, the workers and the harness).

Configured from the environment: ``PEERS_REDIS_URL`` (broker and RedBeat),
``PEERS_LEDGER`` (the ledger file). Everything else is Celery's and RedBeat's
defaults, except ``task_ignore_result`` (no result backend).

The tick: :class:`TickBeat` is RedBeat's scheduler with one change: when it
sends an entry, it adds ``tick=`` to the task's kwargs: the occurrence of the
entry's ``rrule`` that made it due, i.e. the first occurrence after the
entry's ``last_run_at`` (exactly what RedBeat's ``rrule.is_due`` compares
with now). The first run of an entry (no ``last_run_at``) gets the whole
second at or before the send time. If beat falls more than a second behind,
RedBeat sends an entry once and moves ``last_run_at`` to now, so the ticks in
between are never sent (they show up as misses).
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from redbeat import RedBeatScheduler

from bench.peers.common import run_body, tick_iso

REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
LEDGER = os.environ.get("PEERS_LEDGER", "/dev/null")

app = Celery("etcron_peers", broker=REDIS_URL)
app.conf.update(
    redbeat_redis_url=REDIS_URL,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    timezone="UTC",
    enable_utc=True,
)
if os.environ.get("PEERS_BEAT_MAX_LOOP_INTERVAL"):
    # RedBeat's lock timeout is 5 x this (default 5 x 300 s); a standby beat polls the lock every this
    app.conf.beat_max_loop_interval = float(os.environ["PEERS_BEAT_MAX_LOOP_INTERVAL"])


@app.task(name="ledger", bind=True, ignore_result=True)
def ledger(self: Any, job: str, tick: str) -> None:
    """One O_APPEND write of ``job tick time pid worker`` (or the compiled writer)."""
    run_body(LEDGER, job, tick, (self.request.hostname or "?").split("@")[0])


def scheduled_for(entry: Any) -> datetime:
    last = entry.last_run_at
    if last is not None:
        nxt = entry.schedule.rrule.after(entry.schedule.maybe_make_aware(last))
        if nxt is not None:
            return nxt
    return datetime.fromtimestamp(math.floor(time.time()), UTC)


class TickBeat(RedBeatScheduler):
    """RedBeat, passing the scheduled occurrence to the task as ``tick``."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any):  # type: ignore[override]
        entry.kwargs = {**(entry.kwargs or {}), "tick": tick_iso(scheduled_for(entry))}
        return super().apply_async(entry, producer, advance, **kwargs)

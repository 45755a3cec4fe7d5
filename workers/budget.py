"""The leader's word on etcd's space, as the worker sees it.

The elected master writes ``budget`` (``{"output_spent": bool}``,
``scheduler.master.space``). The worker reads it every ``EVERY`` seconds; while
the output budget is spent, runs keep their output tail in their record and
ship no chunks (``workers.output_sink``): etcd's quota is a budget, not a cliff.
"""

from __future__ import annotations

import asyncio
import json

import structlog

from scheduler.etcd.client import EtcdClient, EtcdError

log = structlog.get_logger("etcron.worker")

EVERY = 5.0


class OutputBudget:
    def __init__(self) -> None:
        self.spent = False

    def apply(self, raw: bytes | None) -> None:
        try:
            spent = bool(json.loads(raw).get("output_spent")) if raw else False
        except (ValueError, AttributeError):
            spent = False
        if spent != self.spent:
            say = log.warning if spent else log.info
            say("output budget", spent=spent, effect="runs keep their tail only" if spent else "")
        self.spent = spent

    async def follow(self, client: EtcdClient, key: str) -> None:
        """Read ``key`` every ``EVERY`` seconds until cancelled (errors keep the last word)."""
        while True:
            try:
                kv, _ = await client.get(key)
                self.apply(kv.value if kv is not None else None)
            except EtcdError:
                pass
            await asyncio.sleep(EVERY)

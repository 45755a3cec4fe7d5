"""A master's presence: its clock, published for the workers' cluster time.

Workers estimate cluster time from the clocks that live members publish
(``workers.cluster_time``). Masters take part, so that two workers and a master
make three clocks, of which one wrong clock is a minority. A master keeps
``masters/<id>`` on a session lease (so it vanishes with the master) and
rewrites it every ``EVERY`` seconds with its host clock. The key is only a
clock sample: it carries no authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket

import structlog

from scheduler import __version__
from scheduler.clock import Clock
from scheduler.etcd.client import EtcdClient, EtcdError
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace

log = structlog.get_logger("etcron.master")

EVERY = 2.0
TTL = 10


async def publish_presence(
    client: EtcdClient, ks: Keyspace, master_id: str, clock: Clock | None = None
) -> None:
    """Keep ``masters/<master_id>`` current until cancelled; retries through outages."""
    clock = clock or Clock()
    key = ks.master(master_id)
    while True:
        session = Session(client, ttl=TTL, margin=1.0, clock=clock)
        try:
            await session.start()
            while not session.lost.is_set():
                value = {
                    "id": master_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "clock": clock.time(),
                    "version": __version__,
                }
                with contextlib.suppress(EtcdError):
                    await client.put(key, json.dumps(value).encode(), lease=session.lease_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EVERY):
                        await session.lost.wait()
        except EtcdError as exc:
            log.info("master presence: no session, retrying", error=str(exc)[:200])
            await asyncio.sleep(EVERY)
        finally:
            await session.close(revoke=True)

"""Leader election (scheduler.etcd.election) against a real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.client import EtcdClient, op_put
from scheduler.etcd.election import Election, is_owner
from scheduler.etcd.session import Session
from tests.support import wait_for


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


async def test_one_leader_and_the_next_takes_over_on_resign(
    client: EtcdClient, prefix: str
) -> None:
    key = f"{prefix}/leader"
    a, b = Election(client, key, "a", retry=0.1), Election(client, key, "b", retry=0.1)
    sa = await Session(client, ttl=4, margin=1).start()
    sb = await Session(client, ttl=4, margin=1).start()
    try:
        assert await a.campaign(sa)
        assert a.is_leader.is_set() and await a.leader() == "a"
        waiting = asyncio.create_task(b.campaign(sb))
        # b keeps trying (every 0.1 s) and does not win while a leads
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done and not b.is_leader.is_set()
        await a.resign()
        assert not a.is_leader.is_set()
        assert await asyncio.wait_for(waiting, 5)
        assert b.is_leader.is_set() and await b.leader() == "b"
        # a's resign after losing leadership must not delete b's key
        a.is_leader.set()
        await a.resign()
        assert await b.leader() == "b"
    finally:
        await sa.close()
        await sb.close()


async def test_owner_compare_fails_once_leadership_is_gone(client: EtcdClient, prefix: str) -> None:
    key, guarded = f"{prefix}/leader", f"{prefix}/guarded"
    e = Election(client, key, "m1", retry=0.1)
    s = await Session(client, ttl=4, margin=1).start()
    try:
        assert await e.campaign(s)
        res = await client.txn([e.owner()], [op_put(guarded, b"1")])
        assert res.succeeded
        await client.revoke(s.lease_id)  # the key goes with the lease
        await wait_for(lambda: s.lost.is_set(), timeout=5)
        assert await e.leader() is None
        res = await client.txn([is_owner(key, "m1")], [op_put(guarded, b"2")])
        assert not res.succeeded
        kv, _ = await client.get(guarded)
        assert kv is not None and kv.value == b"1"
    finally:
        await s.close()


async def test_campaign_gives_up_when_the_session_is_lost(client: EtcdClient, prefix: str) -> None:
    key = f"{prefix}/leader"
    holder = Election(client, key, "holder", retry=0.1)
    other = Election(client, key, "other", retry=0.1)
    sh = await Session(client, ttl=6, margin=1).start()
    so = await Session(client, ttl=4, margin=1).start()
    try:
        assert await holder.campaign(sh)
        waiting = asyncio.create_task(other.campaign(so))
        await client.revoke(so.lease_id)
        assert await asyncio.wait_for(waiting, 5) is False
        assert not other.is_leader.is_set() and await holder.leader() == "holder"
    finally:
        await sh.close()
        await so.close()


def test_retry_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retry"):
        Election(None, "k", "i", retry=0)  # type: ignore[arg-type]

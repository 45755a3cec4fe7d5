"""Gray etcd failures: a member that stops answering with its sockets open (SIGSTOP).

A three-member cluster (module fixture); each test freezes one member and checks
that the client, a session and a list-watch move to a healthy member in a bounded
time without losing anything. The frozen member is always resumed before the next
test, which then waits for a healthy cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.etcd_process import EtcdCluster
from scheduler.config import EtcdConfig
from scheduler.etcd.client import (
    _CHANNEL_OPTIONS,
    IDLE_PROBE,
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    SLOW_REQUEST,
    EtcdAmbiguous,
    EtcdClient,
    cmp_created,
    op_put,
)
from scheduler.etcd.listwatch import Batch, ListWatch, Snapshot
from scheduler.etcd.session import Session
from tests.support import wait_for, wait_until

pytestmark = pytest.mark.slow

# A frozen active member is found within one probe interval plus one probe deadline.
DETECT = SLOW_REQUEST + PROBE_INTERVAL + PROBE_TIMEOUT  # a stuck request: probe, no answer
ELECTION = 1.0  # test members run with --election-timeout 500 ms


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(Path(tmp_path_factory.mktemp("gray")), 3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def healthy(cluster: EtcdCluster) -> AsyncIterator[EtcdCluster]:
    """The cluster with every member answering and a leader; resumed afterwards."""
    for m in cluster.members:
        m.resume()
    await asyncio.to_thread(wait_until, lambda: all(m.healthy() for m in cluster.members), 20)
    await asyncio.to_thread(cluster.wait_for_leader, 15)
    try:
        yield cluster
    finally:
        for m in cluster.members:
            m.resume()


def _config(cluster: EtcdCluster, prefix: str, request_timeout: float = 2.0) -> EtcdConfig:
    return EtcdConfig(endpoints=cluster.endpoints, prefix=prefix, request_timeout=request_timeout)


def _index(cluster: EtcdCluster, client: EtcdClient) -> int:
    return cluster.endpoints.index(client.active.endpoint)


@contextlib.asynccontextmanager
async def _frozen(cluster: EtcdCluster, i: int) -> AsyncIterator[float]:
    """SIGSTOP member ``i`` for the body; yields the loop time it froze at."""
    cluster.members[i].pause()
    try:
        yield asyncio.get_running_loop().time()
    finally:
        cluster.members[i].resume()


async def test_requests_move_off_a_frozen_member(healthy: EtcdCluster, prefix: str) -> None:
    # a long request deadline: only failover can make the calls below fast
    client = await EtcdClient.connect(_config(healthy, prefix, request_timeout=8))
    try:
        await client.put(f"{prefix}/k", b"0")
        frozen = _index(healthy, client)
        loop = asyncio.get_running_loop()
        async with _frozen(healthy, frozen) as t0:
            # a write sent once to the frozen member is cut short as ambiguous
            with pytest.raises(EtcdAmbiguous):
                await client.txn_once(
                    [cmp_created(f"{prefix}/once", 0)], [op_put(f"{prefix}/once", b"1")]
                )
            cut = loop.time() - t0
            # idempotent calls go on, on another member
            for i in range(5):
                await client.put(f"{prefix}/k", str(i + 1).encode())
            done = loop.time() - t0
            kv, _ = await client.get(f"{prefix}/k")
            assert _index(healthy, client) != frozen
        assert kv is not None and kv.value == b"5"
        assert client.switches >= 1
        # detection plus, when the leader froze, an election and the re-sent writes
        assert cut <= DETECT + 0.5, f"in-flight write cut after {cut:.2f}s"
        assert done <= DETECT + ELECTION + 1.5, f"writes done after {done:.2f}s"
    finally:
        await client.close()


async def test_in_flight_writes_are_cut_when_the_leader_changes(
    healthy: EtcdCluster, prefix: str
) -> None:
    """The client is on a healthy follower; the leader freezes. A write forwarded to
    the frozen leader is never answered; the new term ends it early, and the
    re-sent write commits on the new leader."""
    lead = await asyncio.to_thread(healthy.wait_for_leader, 15)
    client = await EtcdClient.connect(_config(healthy, prefix, request_timeout=8))
    try:
        while _index(healthy, client) == lead:  # move the client off the leader
            client._active = (client._active + 1) % 3
        loop = asyncio.get_running_loop()
        async with _frozen(healthy, lead) as t0:
            key = f"{prefix}/claim"
            try:
                await client.txn_once([cmp_created(key, 0)], [op_put(key, b"x")])
            except EtcdAmbiguous as exc:
                assert "leader" in str(exc) or "unresponsive" in str(exc)
                cut = loop.time() - t0
                await client.txn_once([cmp_created(key, 0)], [op_put(key, b"x")])
            else:
                cut = loop.time() - t0  # the follower already knew the new leader
            committed = loop.time() - t0
            kv, _ = await client.get(key)
        assert kv is not None and kv.value == b"x"
        assert cut <= ELECTION + DETECT + 0.5, f"write cut after {cut:.2f}s"
        assert committed <= ELECTION + DETECT + 1.0, f"write committed after {committed:.2f}s"
    finally:
        await client.close()


@pytest.mark.parametrize("victim", ["leader", "session member"])
async def test_session_survives_a_frozen_member(
    healthy: EtcdCluster, prefix: str, victim: str
) -> None:
    """ttl 4 s, margin 1 s (the chaos rig's): the member freezes for longer than the
    TTL, and the session is never lost."""
    client = await EtcdClient.connect(_config(healthy, prefix))
    session = await Session(client, ttl=4, margin=1.0).start()
    try:
        lead = await asyncio.to_thread(healthy.wait_for_leader, 15)
        # freeze just after an ack, the worst moment: the next keepalive is the
        # first to hang and the local deadline is at its nearest
        renewed = asyncio.Event()
        session.on_renew.append(lambda _d: renewed.set())
        await asyncio.wait_for(renewed.wait(), 5)
        renewed.clear()
        await asyncio.wait_for(renewed.wait(), 5)
        target = lead if victim == "leader" else _index(healthy, client)
        before = session.keepalives
        async with _frozen(healthy, target) as t0:
            with pytest.raises(TimeoutError):  # the session must NOT be lost
                await asyncio.wait_for(session.lost.wait(), 4 + 2)
            renewals = session.keepalives - before
            held = asyncio.get_running_loop().time() - t0
        assert not session.lost.is_set(), session.lost_reason
        assert renewals >= 3, f"only {renewals} keepalives acked in {held:.1f}s"
        assert await client.lease_ttl(session.lease_id) > 0
    finally:
        await session.close()
        await client.close()


async def test_watch_resumes_on_another_member_without_losing_events(
    healthy: EtcdCluster, prefix: str
) -> None:
    watcher = await EtcdClient.connect(_config(healthy, prefix))
    writer = await EtcdClient.connect(_config(healthy, prefix))
    lw = ListWatch(watcher, f"{prefix}/w/", idle=0.5, stall=PROBE_TIMEOUT)
    state: dict[str, bytes] = {}
    revisions: list[int] = []  # of every event delivered
    seen = asyncio.Event()

    async def consume() -> None:
        async for item in lw:
            if isinstance(item, Snapshot):
                state.clear()
                state.update({k: kv.value for k, kv in item.kvs.items()})
            elif isinstance(item, Batch):
                for ev in item.events:
                    revisions.append(ev.kv.mod_revision)
                    state[ev.key] = ev.kv.value
            seen.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(seen.wait(), 10)
        await writer.put(f"{prefix}/w/a", b"before")
        await wait_for(lambda: state.get(f"{prefix}/w/a") == b"before", 5)
        # the watch's member: the only one with a live watch stream of ours
        frozen = next(i for i, m in enumerate(watcher.members) if m is watcher.active)
        # the writer must not be stuck on the frozen member (it moves by itself)
        loop = asyncio.get_running_loop()
        async with _frozen(healthy, frozen) as t0:
            want = {f"{prefix}/w/{i}": str(i).encode() for i in range(20)}
            for k, v in want.items():
                await writer.put(k, v)
            await wait_for(lambda: all(state.get(k) == v for k, v in want.items()), 8)
            caught_up = loop.time() - t0
        assert lw.stats.stalls >= 1
        assert lw.stats.lists == 1, "resumed by revision, not by listing again"
        assert revisions == sorted(set(revisions)), "an event was delivered twice or out of order"
        # a put the writer re-sent after its own failover is a second event: count
        # the puts etcd applied (each key's version) rather than the calls made
        # (at the read's revision: a put re-sent through the frozen member may be
        # applied, and delivered, after the read)
        kvs, rev = await writer.get_prefix(f"{prefix}/w/")
        applied = sum(kv.version for kv in kvs)
        await wait_for(lambda: len([r for r in revisions if r <= rev]) >= applied, 5)
        upto = [r for r in revisions if r <= rev]
        assert len(upto) == applied >= 21, "every event exactly once"
        assert caught_up <= 0.5 + PROBE_TIMEOUT + DETECT + ELECTION + 1.0, caught_up
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.close()
        await writer.close()


async def test_probes_keep_the_client_on_a_healthy_member(
    healthy: EtcdCluster, prefix: str
) -> None:
    """No fault: over several probe rounds the client never switches, and an
    idle watch answers its progress requests (no stall)."""
    client = await EtcdClient.connect(_config(healthy, prefix))
    lw = ListWatch(client, f"{prefix}/idle/", idle=0.2)
    items: list[object] = []

    async def consume() -> None:
        async for item in lw:
            items.append(item)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: items, 5)
        probes = client.probes
        # an idle probe round and answered progress requests, with nothing moving
        await wait_for(
            lambda: (
                client.switches
                or lw.stats.stalls
                or (client.probes >= probes + 1 and lw.stats.progress >= 5)
            ),
            IDLE_PROBE + 5,
        )
        assert client.switches == 0
        assert lw.stats.stalls == 0 and lw.stats.reconnects == 0
        assert client.aborts == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def test_grpc_keepalive_stays_within_etcds_enforcement_policy() -> None:
    """etcd (--grpc-keepalive-min-time, 5 s by default) answers pings sent more
    often, or sent with no stream open, with GOAWAY too_many_pings."""
    options = dict(_CHANNEL_OPTIONS)
    assert options["grpc.keepalive_time_ms"] >= 2 * 5_000
    assert 0 < options["grpc.keepalive_timeout_ms"] < options["grpc.keepalive_time_ms"]
    assert options["grpc.keepalive_permit_without_calls"] == 0

"""The etcd layer against a real etcd: list-watch, session, claim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.claim_txn import (
    ClaimRequest,
    HandOver,
    Outcome,
    TickFence,
    TriggerFence,
    acquire,
    claim,
    release,
    release_and_claim,
)
from scheduler.etcd.client import Cmp, EtcdAmbiguous, EtcdClient, Op, TxnResult
from scheduler.etcd.listwatch import Batch, ListWatch, Snapshot
from scheduler.etcd.session import Session
from scheduler.keyspace import Keyspace, decode_tick
from tests.support import wait_for
from tests.support.proxy import TcpProxy


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


@pytest.fixture
async def proxy(etcd_endpoints: list[str]) -> AsyncIterator[TcpProxy]:
    host, port = etcd_endpoints[0].rsplit(":", 1)
    p = TcpProxy(host, int(port))
    await p.start()
    yield p
    await p.stop()


async def _collect(lw: ListWatch, state: dict[str, bytes], snapshots: list[int]) -> None:
    async for item in lw:
        if isinstance(item, Snapshot):
            snapshots.append(item.revision)
            state.clear()
            state.update({k: kv.value for k, kv in item.kvs.items()})
        else:
            for ev in item.events:
                if ev.kind.value == "put":
                    state[ev.key] = ev.kv.value
                else:
                    state.pop(ev.key, None)


async def _truth(client: EtcdClient, prefix: str) -> dict[str, bytes]:
    kvs, _ = await client.get_prefix(prefix)
    return {kv.key: kv.value for kv in kvs}


async def test_listwatch_delivers_every_event_in_order(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    await client.put(ks.job("pre"), b"0")
    lw = ListWatch(client, ks.jobs)
    seen: list[tuple[str, bytes, int]] = []
    it = aiter(lw)
    first = await anext(it)
    assert isinstance(first, Snapshot) and list(first.kvs) == [ks.job("pre")]
    for i in range(50):
        await client.put(ks.job(f"j{i % 5}"), str(i).encode())
    await client.delete(ks.job("pre"))
    while len(seen) < 51:
        item = await asyncio.wait_for(anext(it), 5)
        assert isinstance(item, Batch)
        seen.extend((e.key, e.kv.value, e.kv.mod_revision) for e in item.events)
    revs = [r for _, _, r in seen]
    assert revs == sorted(revs) and len(set(revs)) == 51
    assert [v for _, v, _ in seen[:50]] == [str(i).encode() for i in range(50)]
    await it.aclose()


async def test_listwatch_resumes_after_cut_without_losing_events(
    proxy: TcpProxy, client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    watched = await EtcdClient.connect(EtcdConfig(endpoints=[proxy.address]))
    state: dict[str, bytes] = {}
    snaps: list[int] = []
    lw = ListWatch(watched, ks.jobs, backoff=0.05, max_backoff=0.2)
    task = asyncio.create_task(_collect(lw, state, snaps))
    try:
        await wait_for(lambda: snaps, timeout=5)
        for round_ in range(3):
            await client.put(ks.job(f"before{round_}"), b"x")
            await proxy.cut()
            for i in range(20):  # writes while the watcher cannot see
                await client.put(ks.job(f"k{i}"), f"{round_}-{i}".encode())
            await client.delete(ks.job(f"before{round_}"))
            await proxy.restore()
            truth = await _truth(client, ks.jobs)
            await wait_for(lambda t=truth: state == t, timeout=10)
        assert lw.stats.reconnects >= 1
        assert len(snaps) == 1, "no re-list needed: resumed from the last delivered revision"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watched.close()


async def test_listwatch_relists_after_compaction(
    proxy: TcpProxy, client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    watched = await EtcdClient.connect(EtcdConfig(endpoints=[proxy.address]))
    state: dict[str, bytes] = {}
    snaps: list[int] = []
    lw = ListWatch(watched, ks.jobs, backoff=0.05, max_backoff=0.2)
    task = asyncio.create_task(_collect(lw, state, snaps))
    try:
        await client.put(ks.job("doomed"), b"1")
        await wait_for(lambda: ks.job("doomed") in state, timeout=5)
        await proxy.cut()
        await client.delete(ks.job("doomed"))
        for i in range(5):
            await client.put(ks.job(f"new{i}"), b"v")
        rev = await client.revision()
        await client.compact(rev)
        await proxy.restore()
        truth = await _truth(client, ks.jobs)
        await wait_for(lambda: state == truth and len(snaps) == 2, timeout=10)
        assert lw.stats.compactions == 1
        assert ks.job("doomed") not in state, (
            "a delete hidden by compaction is seen via the new snapshot"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watched.close()


async def test_session_revoked_fires_lost(client: EtcdClient) -> None:
    s = await Session(client, ttl=3, margin=0.5).start()
    try:
        assert s.alive and not s.lost.is_set()
        await client.revoke(s.lease_id)
        await asyncio.wait_for(s.lost.wait(), 3)
        assert "expired or revoked" in s.lost_reason
    finally:
        await s.close()


async def test_session_cut_off_is_lost_before_server_expiry(
    proxy: TcpProxy, client: EtcdClient
) -> None:
    cut_client = await EtcdClient.connect(EtcdConfig(endpoints=[proxy.address], request_timeout=1))
    s = await Session(cut_client, ttl=4, margin=1.5).start()
    try:
        await wait_for(lambda: s.keepalives >= 1, timeout=5)
        await proxy.cut()
        await asyncio.wait_for(s.lost.wait(), 5)
        # the server still has the lease: we gave up first
        assert await client.lease_ttl(s.lease_id) > 0
    finally:
        await proxy.restore()
        await s.close()
        await cut_client.close()


def _req(ks: Keyspace, run: str, tick: int, lease: int = 0) -> ClaimRequest:
    return ClaimRequest.tick(
        TickFence(ks.tick("j"), tick),
        lock_key=ks.lock("j"),
        lock_value=f'{{"run_id":"{run}"}}'.encode(),
        lease=lease,
        run_id=run,
        record_key=ks.run("j", run),
        record_value=b"running",
        skip_value=b"skipped",
    )


async def test_concurrent_claims_of_one_tick_have_one_winner(
    client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    for tick in (1000, 2000, 3000):
        results = await asyncio.gather(
            *(claim(client, _req(ks, f"r{tick}-{i}", tick)) for i in range(20))
        )
        won = [r for r in results if r.outcome is Outcome.WON]
        assert len(won) == 1
        assert all(r.outcome in (Outcome.TAKEN, Outcome.BUSY) for r in results if r is not won[0])
        lock, _ = await client.get(ks.lock("j"))
        assert lock is not None and lock.create_revision == won[0].token
        assert await release(client, ks.lock("j"), won[0].token, ks.run("j", "x"), b"done")


async def test_forbid_busy_records_one_skip_and_release_is_guarded(
    client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    first = await claim(client, _req(ks, "a", 1000))
    assert first.outcome is Outcome.WON
    busy = await asyncio.gather(*(claim(client, _req(ks, f"b{i}", 2000)) for i in range(5)))
    assert [b.recorded for b in busy].count(True) == 1
    assert all(b.outcome in (Outcome.BUSY, Outcome.TAKEN) for b in busy)
    # a stale release (wrong token) must not delete the current lock
    assert not await release(client, ks.lock("j"), first.token + 1000, ks.run("j", "a"), b"x")
    assert (await client.get(ks.lock("j")))[0] is not None
    assert await release(client, ks.lock("j"), first.token, ks.run("j", "a"), b"done")
    assert (await client.get(ks.lock("j")))[0] is None


class LostReply(EtcdClient):
    """A real client whose first transaction commits in etcd but whose reply is 'lost'."""

    lose = 1

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        res = await super().txn_once(compare, success, failure)
        if self.lose:
            self.lose -= 1
            raise EtcdAmbiguous("reply lost (injected after commit)")
        return res


async def test_committed_claim_with_lost_reply_is_reported_won(
    etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    c = await LostReply.connect(EtcdConfig(endpoints=etcd_endpoints))
    try:
        result = await claim(c, _req(ks, "mine", 5000))
        assert result.outcome is Outcome.WON
        lock, _ = await c.get(ks.lock("j"))
        assert lock is not None and lock.create_revision == result.token
    finally:
        await c.close()


async def test_trigger_claim_takes_a_request_once(client: EtcdClient, prefix: str) -> None:
    """Five claims race for one manual-run request: one wins, it writes the request's
    ``taken`` key and leaves the request itself alone (workers may not write it);
    a request that is gone cannot be claimed at all."""
    ks = Keyspace(prefix)
    key, taken = ks.trigger("j", "req"), ks.taken("j", "req")
    await client.put(key, b"{}")

    def req(run: str, trigger: str = key, took: str = taken) -> ClaimRequest:
        fence = TriggerFence(trigger, took, run.encode())
        return ClaimRequest.manual(
            fence,
            lock_key=ks.run_lock("j", run),
            lock_value=b"x",
            lease=0,
            run_id=run,
            record_key=ks.run("j", run),
            record_value=b"r",
        )

    results = await asyncio.gather(*(claim(client, req(f"m{i}")) for i in range(5)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.WON) == 1 and outcomes.count(Outcome.TAKEN) == 4, outcomes
    winner = next(f"m{i}" for i, r in enumerate(results) if r.outcome is Outcome.WON)
    assert (await client.get(taken))[0].value == winner.encode()  # type: ignore[union-attr]
    assert (await client.get(key))[0] is not None, "the request stays until its lease ends"

    gone = await claim(client, req("late", ks.trigger("j", "gone"), ks.taken("j", "gone")))
    assert gone.outcome is Outcome.TAKEN
    assert (await client.get(ks.taken("j", "gone")))[0] is None


def _handover(ks: Keyspace, run: str, tick: int) -> HandOver:
    return HandOver(
        TickFence(ks.tick("j"), tick),
        f'{{"run_id":"{run}"}}'.encode(),
        0,
        ks.run("j", run),
        b"running",
    )


async def test_release_and_claim_hands_the_lock_to_the_next_tick(
    client: EtcdClient, prefix: str
) -> None:
    """One transaction: the old run's final record, the fence moved to the next
    tick, the lock rewritten for the next run (mod revision = its token)."""
    ks = Keyspace(prefix)
    first = await claim(client, _req(ks, "a", 1000))
    assert first.outcome is Outcome.WON
    handed = await release_and_claim(
        client, ks.lock("j"), first.token, ks.run("j", "a"), b"done", _handover(ks, "b", 2000)
    )
    assert handed.released and handed.token > first.token
    assert handed.replaced == 1000
    lock, _ = await client.get(ks.lock("j"))
    assert lock is not None and lock.value == b'{"run_id":"b"}'
    assert lock.mod_revision == handed.token and lock.create_revision == first.token
    fence, _ = await client.get(ks.tick("j"))
    assert fence is not None and decode_tick(fence.value) == 2000
    assert (await client.get(ks.run("j", "a")))[0].value == b"done"  # type: ignore[union-attr]
    assert (await client.get(ks.run("j", "b")))[0].value == b"running"  # type: ignore[union-attr]
    # the old token no longer releases anything; the new one does
    assert not await release(client, ks.lock("j"), first.token, ks.run("j", "a"), b"done")
    assert (await client.get(ks.lock("j")))[0] is not None
    assert await release(client, ks.lock("j"), handed.token, ks.run("j", "b"), b"done")
    assert (await client.get(ks.lock("j")))[0] is None
    # nobody can claim tick 2000 again
    again = await claim(client, _req(ks, "c", 2000))
    assert again.outcome is Outcome.TAKEN


async def test_release_and_claim_of_a_taken_tick_is_a_plain_release(
    client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    first = await claim(client, _req(ks, "a", 1000))
    busy = await claim(client, _req(ks, "s", 2000))  # another worker skip-records 2000
    assert busy.outcome is Outcome.BUSY and busy.recorded
    handed = await release_and_claim(
        client, ks.lock("j"), first.token, ks.run("j", "a"), b"done", _handover(ks, "b", 2000)
    )
    assert handed.released and handed.token == 0
    assert (await client.get(ks.lock("j")))[0] is None
    assert (await client.get(ks.run("j", "b")))[0] is None
    assert (await client.get(ks.run("j", "a")))[0].value == b"done"  # type: ignore[union-attr]


async def test_release_and_claim_with_a_stale_token_leaves_the_lock(
    client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    first = await claim(client, _req(ks, "a", 1000))
    handed = await release_and_claim(
        client,
        ks.lock("j"),
        first.token + 1000,
        ks.run("j", "z"),
        b"done",
        _handover(ks, "b", 2000),
    )
    assert not handed.released and handed.token == 0
    lock, _ = await client.get(ks.lock("j"))
    assert lock is not None and lock.value == b'{"run_id":"a"}'
    fence, _ = await client.get(ks.tick("j"))
    assert fence is not None and decode_tick(fence.value) == 1000


async def test_release_and_claim_with_lost_reply_is_reported_handed(
    etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    c = await LostReply.connect(EtcdConfig(endpoints=etcd_endpoints))
    try:
        c.lose = 0
        first = await claim(c, _req(ks, "a", 1000))
        c.lose = 1
        nxt = _handover(ks, "b", 2000)
        with pytest.raises(EtcdAmbiguous):
            await release_and_claim(c, ks.lock("j"), first.token, ks.run("j", "a"), b"done", nxt)
        handed = await release_and_claim(
            c, ks.lock("j"), first.token, ks.run("j", "a"), b"done", nxt
        )
        lock, _ = await c.get(ks.lock("j"))
        assert lock is not None and handed.released and handed.token == lock.mod_revision
        assert handed.token > first.token
    finally:
        await c.close()


async def test_a_listing_larger_than_the_receive_limit_is_paged_by_bytes(
    client: EtcdClient, prefix: str
) -> None:
    """36 MB of values (more than the client may receive at once, and far more than
    gRPC's 4 MiB default): the listing comes in pages, every value intact, and the
    member is not taken for a failed one."""
    from scheduler.etcd.client import MAX_RECEIVE, PAGE_BYTES

    big = 1200 * 1024
    n = MAX_RECEIVE // big + 2
    for i in range(n):
        await client.put(f"{prefix}/big/{i:03d}", bytes([65 + i % 26]) * big)
    active = client.active
    pages = [kvs async for kvs, _ in client.pages(f"{prefix}/big/")]
    kvs = [kv for page in pages for kv in page]
    assert [kv.key for kv in kvs] == [f"{prefix}/big/{i:03d}" for i in range(n)]
    assert all(kv.value == bytes([65 + i % 26]) * big for i, kv in enumerate(kvs))
    assert len(pages) > 1
    assert all(sum(len(kv.value) for kv in page) <= MAX_RECEIVE for page in pages)
    # after the first page, pages follow the sizes seen: one ~1.2 MB value each
    assert all(sum(len(kv.value) for kv in page) <= max(PAGE_BYTES, big) for page in pages[1:])
    assert client.active is active
    listed, _ = await client.get_prefix(f"{prefix}/big/")
    assert len(listed) == n
    await client.delete(f"{prefix}/big/", prefix=True)


async def test_a_watch_catching_up_on_more_than_the_receive_limit_loses_nothing(
    proxy: TcpProxy, client: EtcdClient, prefix: str
) -> None:
    """While the watcher is cut off, 36 MB of values are written; when it comes back
    the watch resumes from its last revision and delivers every one (etcd sends the
    catch-up in fragments, joined before delivery), without a re-list."""
    from scheduler.etcd.client import MAX_RECEIVE

    ks = Keyspace(prefix)
    watched = await EtcdClient.connect(EtcdConfig(endpoints=[proxy.address]))
    state: dict[str, bytes] = {}
    snaps: list[int] = []
    lw = ListWatch(watched, ks.jobs, backoff=0.05, max_backoff=0.2)
    task = asyncio.create_task(_collect(lw, state, snaps))
    big = 1200 * 1024
    n = MAX_RECEIVE // big + 2
    try:
        await wait_for(lambda: snaps, timeout=5)
        await proxy.cut()
        for i in range(n):
            await client.put(ks.job(f"big{i:03d}"), bytes([65 + i % 26]) * big)
        await proxy.restore()
        await wait_for(lambda: len(state) == n, timeout=30)
        assert all(state[ks.job(f"big{i:03d}")] == bytes([65 + i % 26]) * big for i in range(n))
        assert len(snaps) == 1, "resumed from the last delivered revision, no re-list"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watched.close()
        await client.delete(ks.jobs, prefix=True)


# ----------------------------------------------------------------- ownership is exact

SUPERSTRING = b'{"run_id":"a"}, {"run_id":"other"}'
"""Another holder's lock value that contains ours (``{"run_id":"a"}``) as a substring."""


async def test_a_lock_containing_our_value_is_not_taken_as_ours_by_claim(
    client: EtcdClient, prefix: str
) -> None:
    """Our record exists (as after a lost reply) but the lock holds another value
    that contains ours: the claim did not win; it reports BUSY, not WON."""
    ks = Keyspace(prefix)
    req = _req(ks, "a", 1000)
    assert req.lock_value in SUPERSTRING
    await client.put(ks.lock("j"), SUPERSTRING)
    await client.put(req.record_key, b"running")
    result = await claim(client, req)
    assert result.outcome is Outcome.BUSY and result.token == 0
    lock, _ = await client.get(ks.lock("j"))
    assert lock is not None and lock.value == SUPERSTRING


async def test_a_lock_containing_our_value_is_not_taken_as_ours_by_acquire(
    client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    await client.put(ks.lock("j"), SUPERSTRING)
    token, holder = await acquire(client, ks.lock("j"), b'{"run_id":"a"}', 0, deadline=2.0)
    assert (token, holder) == (0, SUPERSTRING)
    # and the exact value is ours (an earlier attempt whose reply was lost)
    rev = await client.put(ks.lock("k"), b'{"run_id":"a"}')
    assert await acquire(client, ks.lock("k"), b'{"run_id":"a"}', 0, deadline=2.0) == (rev, None)


async def test_a_lock_containing_the_next_value_is_not_taken_as_handed(
    client: EtcdClient, prefix: str
) -> None:
    """A hand-over whose release compare fails, with the lock holding a value that
    contains the next run's value: not handed, and the lock is left alone."""
    ks = Keyspace(prefix)
    nxt = _handover(ks, "a", 2000)
    assert nxt.lock_value in SUPERSTRING
    stale = await client.put(ks.lock("j"), SUPERSTRING)
    handed = await release_and_claim(
        client, ks.lock("j"), stale - 1, ks.run("j", "z"), b"done", nxt
    )
    assert not handed.released and handed.token == 0
    lock, _ = await client.get(ks.lock("j"))
    assert lock is not None and lock.value == SUPERSTRING and lock.mod_revision == stale

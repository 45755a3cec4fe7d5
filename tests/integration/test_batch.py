"""Group-committed claims and releases (scheduler.etcd.batch) against a real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from scheduler.config import EtcdConfig
from scheduler.etcd.batch import TxnBatcher
from scheduler.etcd.claim_txn import ClaimRequest, Outcome, TickFence, claim, release
from scheduler.etcd.client import Cmp, EtcdAmbiguous, EtcdClient, Op, TxnResult, op_put
from scheduler.keyspace import Keyspace
from tests.support import wait_for


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def _req(ks: Keyspace, job: str, run: str, tick: int) -> ClaimRequest:
    return ClaimRequest.tick(
        TickFence(ks.tick(job), tick),
        lock_key=ks.lock(job),
        lock_value=f'{{"run_id":"{run}"}}'.encode(),
        lease=0,
        run_id=run,
        record_key=ks.run(job, run),
        record_value=b"running",
        skip_value=b"skipped",
    )


async def test_claims_submitted_together_share_one_request(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    batcher = TxnBatcher(client)
    jobs = [f"j{i}" for i in range(40)]
    results = await asyncio.gather(*(claim(batcher, _req(ks, j, f"r-{j}", 1000)) for j in jobs))
    assert [r.outcome for r in results] == [Outcome.WON] * 40
    # the first claim of a job finds no fence key and is re-sent with the other compare
    assert batcher.txns == 80 and batcher.sent == 2
    tokens = {r.token for r in results}
    assert len(tokens) == 1  # one revision for the whole batch
    for j in jobs:
        lock, _ = await client.get(ks.lock(j))
        assert lock is not None and lock.create_revision == results[0].token
    released = await asyncio.gather(
        *(
            release(batcher, ks.lock(j), results[0].token, ks.run(j, f"r-{j}"), b"done")
            for j in jobs
        )
    )
    assert all(released) and batcher.sent == 3
    for j in jobs:
        assert (await client.get(ks.lock(j)))[0] is None
    await batcher.close()


async def test_each_claim_in_a_batch_is_decided_alone(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    batcher = TxnBatcher(client)
    first = await claim(batcher, _req(ks, "taken", "early", 2000))
    assert first.outcome is Outcome.WON
    await release(batcher, ks.lock("taken"), first.token, ks.run("taken", "early"), b"done")
    held = await claim(batcher, _req(ks, "held", "holder", 1000))
    assert held.outcome is Outcome.WON
    sent = batcher.sent
    results = await asyncio.gather(
        claim(batcher, _req(ks, "taken", "late", 1500)),  # an older tick: taken
        claim(batcher, _req(ks, "held", "next", 2000)),  # lock held: busy, skip recorded
        claim(batcher, _req(ks, "free", "new", 2000)),  # nobody: won
    )
    assert [r.outcome for r in results] == [Outcome.TAKEN, Outcome.BUSY, Outcome.WON]
    assert results[1].recorded
    assert (await client.get(ks.run("held", "next")))[0] is not None
    assert (await client.get(ks.run("taken", "late")))[0] is None
    assert batcher.sent - sent <= 4
    await batcher.close()


async def test_one_key_twice_goes_in_two_batches_and_has_one_winner(
    client: EtcdClient, prefix: str
) -> None:
    ks = Keyspace(prefix)
    batcher = TxnBatcher(client)
    await client.put(ks.tick("j"), b"0" * 16)  # the fence exists: one round each
    results = await asyncio.gather(
        *(claim(batcher, _req(ks, "j", f"r{i}", 1000)) for i in range(5))
    )
    assert [r.outcome for r in results].count(Outcome.WON) == 1
    assert batcher.sent >= 2  # the same lock key cannot be written twice in one request
    await batcher.close()


class LoseFirstBatchReply(EtcdClient):
    """A real client whose first batch commits in etcd but whose reply is 'lost'."""

    lose = 1

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Cmp], Sequence[Op], Sequence[Op]]]
    ) -> list[TxnResult]:
        res = await super().txn_many(txns)
        if self.lose:
            self.lose -= 1
            raise EtcdAmbiguous("reply lost (injected after commit)")
        return res


async def test_committed_batch_with_lost_reply_is_reported_won(
    etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    c = await LoseFirstBatchReply.connect(EtcdConfig(endpoints=etcd_endpoints))
    batcher = TxnBatcher(c)
    try:
        for j in ("a", "b", "c"):
            await c.put(ks.tick(j), b"0" * 16)
        results = await asyncio.gather(
            *(claim(batcher, _req(ks, j, f"mine-{j}", 5000)) for j in ("a", "b", "c"))
        )
        assert [r.outcome for r in results] == [Outcome.WON] * 3
        for j, r in zip(("a", "b", "c"), results, strict=True):
            lock, _ = await c.get(ks.lock(j))
            assert lock is not None and lock.create_revision == r.token
        assert c.lose == 0 and batcher.sent == 2
    finally:
        await batcher.close()
        await c.close()


async def test_a_cancelled_caller_is_left_out(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    batcher = TxnBatcher(client)
    await client.put(ks.tick("gone"), b"0" * 16)
    gone = asyncio.create_task(claim(batcher, _req(ks, "gone", "x", 1000)))
    await asyncio.sleep(0)  # let it submit (not a wait for anything external)
    assert batcher.txns == 0
    gone.cancel()
    await asyncio.wait_for(batcher.txn_once([], [], []), 5)
    assert batcher.txns == 1
    assert (await client.get(ks.lock("gone")))[0] is None
    await batcher.close()


async def test_large_transactions_are_split_by_size(client: EtcdClient, prefix: str) -> None:
    ks = Keyspace(prefix)
    batcher = TxnBatcher(client, max_bytes=300_000)
    big = b"x" * 100_000
    results = await asyncio.gather(
        *(batcher.txn_once([], [op_put(ks.run("big", f"r{i}"), big)]) for i in range(7))
    )
    assert all(r.succeeded for r in results)
    assert batcher.sent == 4  # at most two ~100 kB transactions fit in 300 kB
    assert batcher.txns == 7
    await batcher.close()


class HeldReplies(EtcdClient):
    """A real client whose requests commit in etcd but whose replies wait for ``go``
    (a leader that commits slowly)."""

    go: asyncio.Event
    out = 0
    most = 0

    async def txn_once(
        self, compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        return (await self.txn_many([(compare, success, failure)]))[0]

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Cmp], Sequence[Op], Sequence[Op]]]
    ) -> list[TxnResult]:
        self.out += 1
        self.most = max(self.most, self.out)
        try:
            res = await super().txn_many(txns)
            await self.go.wait()
            return res
        finally:
            self.out -= 1


async def test_while_a_batch_is_slow_the_next_one_goes_without_waiting(
    etcd_endpoints: list[str], prefix: str
) -> None:
    ks = Keyspace(prefix)
    c = await HeldReplies.connect(EtcdConfig(endpoints=etcd_endpoints))
    c.go = asyncio.Event()
    # pipeline_after=0: without the cap, a queued transaction would go on the next
    # turns of the event loop, so a few turns show whether the cap held
    batcher = TxnBatcher(c, pipeline_after=0, max_in_flight=2)
    try:
        puts = [
            asyncio.create_task(batcher.txn_once([], [op_put(ks.run("p", f"r{i}"), b"x")]))
            for i in range(3)
        ]
        await wait_for(lambda: c.out == 1)
        extra = asyncio.create_task(batcher.txn_once([], [op_put(ks.run("p", "r3"), b"x")]))
        await wait_for(lambda: c.out == 2, timeout=5)  # went while the first was out
        more = asyncio.create_task(batcher.txn_once([], [op_put(ks.run("p", "r4"), b"x")]))
        await wait_for(lambda: batcher._queue, timeout=5)  # submitted, held back
        for _ in range(20):
            await asyncio.sleep(0)  # event-loop turns, not time
        assert c.most == 2, "max_in_flight was exceeded"
        assert batcher._queue, "the third went out while two were in flight"
        c.go.set()
        results = await asyncio.gather(*puts, extra, more)
        assert all(r.succeeded for r in results)
        assert batcher.sent == 3
    finally:
        c.go.set()
        await batcher.close()
        await c.close()

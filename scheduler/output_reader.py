"""Reading run output back: whole, or followed live from any host.

Chunks are written by :mod:`workers.output_sink` under ``output/<job>/<run>/<seq>``
in the format of :mod:`scheduler.output_chunks`.
Following a run is a list-watch of its output prefix plus its run record:
chunks are delivered in ``seq`` order, and the follow ends once the record is
final and every chunk it counts has been delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from scheduler.etcd.client import EtcdClient, KeyValue
from scheduler.etcd.listwatch import EventKind, ListWatch, Snapshot
from scheduler.keyspace import Keyspace
from scheduler.output_chunks import Segment, parse_chunk
from scheduler.runs import RunRecord


async def read_output(client: EtcdClient, ks: Keyspace, job: str, run_id: str) -> list[Segment]:
    kvs, _ = await client.get_prefix(ks.run_output(job, run_id))
    out: list[Segment] = []
    for kv in kvs:  # keys carry a zero-padded seq: key order is print order
        out.extend(parse_chunk(kv.value)[1])
    return out


async def follow_output(
    client: EtcdClient, ks: Keyspace, job: str, run_id: str
) -> AsyncIterator[Segment | RunRecord]:
    """Yield the run's segments in order as they are written, then its final record."""
    queue: asyncio.Queue[tuple[str, KeyValue | None]] = asyncio.Queue()

    async def pump(prefix: str, tag: str) -> None:
        async for item in ListWatch(client, prefix):
            kvs: list[KeyValue]
            if isinstance(item, Snapshot):
                kvs = sorted(item.kvs.values(), key=lambda kv: kv.key)
            else:
                kvs = [e.kv for e in item.events if e.kind is EventKind.PUT]
            for kv in kvs:
                queue.put_nowait((tag, kv))
            if isinstance(item, Snapshot):
                queue.put_nowait((tag + "-listed", None))

    tasks = [
        asyncio.create_task(pump(ks.run_output(job, run_id), "chunk")),
        asyncio.create_task(pump(ks.run(job, run_id), "record")),
    ]
    pending: dict[int, list[Segment]] = {}
    next_seq = 0
    final: RunRecord | None = None
    try:
        while True:
            tag, kv = await queue.get()
            if tag == "chunk" and kv is not None:
                seq, segs = parse_chunk(kv.value)
                if seq >= next_seq:
                    pending[seq] = segs
            elif tag == "record" and kv is not None and kv.key == ks.run(job, run_id):
                with contextlib.suppress(ValueError):
                    rec = RunRecord.from_json(kv.value)
                    if rec.status.final:
                        final = rec
            while next_seq in pending:
                for seg in pending.pop(next_seq):
                    yield seg
                next_seq += 1
            if final is not None and next_seq >= final.output_chunks:
                yield final
                return
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def list_runs(client: EtcdClient, ks: Keyspace, job: str) -> list[RunRecord]:
    """All run records of a job, oldest first; malformed ones are skipped."""
    kvs, _ = await client.get_prefix(ks.job_runs(job))
    out = []
    for kv in kvs:
        with contextlib.suppress(ValueError):
            out.append(RunRecord.from_json(kv.value))
    return out


async def follow_runs(
    client: EtcdClient, ks: Keyspace, job: str, *, start_after: str = ""
) -> AsyncIterator[str]:
    """Yield run ids of the job as their first record appears (after ``start_after``)."""
    seen: set[str] = set()
    async for item in ListWatch(client, ks.job_runs(job)):
        kvs = (
            list(item.kvs.values())
            if isinstance(item, Snapshot)
            else [e.kv for e in item.events if e.kind is EventKind.PUT]
        )
        for kv in sorted(kvs, key=lambda kv: kv.key):
            try:
                _, run_id = ks.parse_run(kv.key)
            except ValueError:
                continue  # not a run record's key
            if run_id > start_after and run_id not in seen:
                seen.add(run_id)
                with contextlib.suppress(ValueError):
                    if RunRecord.from_json(kv.value).status.value in ("skipped", "missed"):
                        continue
                yield run_id

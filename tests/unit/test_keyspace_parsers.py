"""The keyspace's inverse parsers: parse(build(x)) == x, other shapes are a ValueError."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.keyspace import Keyspace
from scheduler.runs import new_run_id

SETTINGS = settings(max_examples=200, deadline=None, database=None)

names = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
"""Job names: DNS labels, as the job model allows."""
run_ids = st.builds(
    new_run_id,
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)
    ),
    manual=st.booleans(),
)
segment = st.text(st.characters(blacklist_characters="/"), min_size=1, max_size=30)
ids = st.text(min_size=1, max_size=40)
"""Worker and master ids are free text (a host name by default)."""
prefixes = st.sampled_from(["/cron", "/a/b", "/x-y"])


@SETTINGS
@given(prefixes, names, run_ids, segment)
def test_job_keys_round_trip(prefix: str, name: str, run_id: str, request: str) -> None:
    ks = Keyspace(prefix)
    assert ks.parse_job(ks.job(name)) == name
    assert ks.parse_tick(ks.tick(name)) == name
    assert ks.parse_lock(ks.lock(name)) == (name, None)
    assert ks.parse_lock(ks.run_lock(name, run_id)) == (name, run_id)
    assert ks.parse_killer(ks.killer(name)) == name
    assert ks.parse_replacing(ks.replacing(name)) == name
    assert ks.parse_trigger(ks.trigger(name, request)) == (name, request)
    assert ks.parse_taken(ks.taken(name, request)) == (name, request)
    assert ks.parse_run(ks.run(name, run_id)) == (name, run_id)


@SETTINGS
@given(prefixes, names, run_ids, st.integers(0, 10**8 - 1), st.integers(0, 10**10 - 1))
def test_numbered_keys_round_trip(prefix: str, name: str, run_id: str, seq: int, v: int) -> None:
    ks = Keyspace(prefix)
    assert ks.parse_output_chunk(ks.output_chunk(name, run_id, seq)) == (name, run_id, seq)
    assert ks.parse_version(ks.version(name, v)) == (name, v)


@SETTINGS
@given(prefixes, ids, segment, names)
def test_id_keys_round_trip(prefix: str, ident: str, kind: str, name: str) -> None:
    ks = Keyspace(prefix)
    assert ks.parse_worker(ks.worker(ident)) == ident
    assert ks.parse_master(ks.master(ident)) == ident
    assert ks.parse_repair(ks.repair(kind, name)) == (kind, name)


@SETTINGS
@given(st.integers(0, 10**15), st.text("0123456789abcdef", min_size=1, max_size=12))
def test_audit_key_round_trip(at_ms: int, nonce: str) -> None:
    ks = Keyspace()
    key = ks.audit_entry(at_ms, nonce)
    assert ks.parse_audit(key) == key.rsplit("/", 1)[1]
    assert ks.parse_audit(key).endswith(f"-{nonce}")


@pytest.mark.parametrize(
    ("parse", "key"),
    [
        ("parse_job", "/cron/ticks/a"),  # another directory
        ("parse_job", "/cron/jobs/"),  # no name
        ("parse_job", "/cron/jobs/a/b"),  # names never hold '/'
        ("parse_job", "/other/jobs/a"),  # another prefix
        ("parse_lock", "/cron/lock/a/b/c"),
        ("parse_lock", "/cron/lock/a/"),
        ("parse_trigger", "/cron/trigger/a"),  # no request id
        ("parse_trigger", "/cron/trigger/a/"),
        ("parse_taken", "/cron/taken/a/r/x"),
        ("parse_run", "/cron/runs/a"),
        ("parse_run", "/cron/runs/a/r/extra"),
        ("parse_output_chunk", "/cron/output/a/r/notanumber"),
        ("parse_output_chunk", "/cron/output/a/r"),
        ("parse_version", "/cron/history/a/x"),
        ("parse_repair", "/cron/repairs/fence"),
        ("parse_worker", "/cron/workers/"),
        ("parse_killer", "/cron/killer/a/b"),
    ],
)
def test_other_shapes_are_refused(parse: str, key: str) -> None:
    with pytest.raises(ValueError, match="/"):
        getattr(Keyspace(), parse)(key)

"""Codecs of the values etcron stores: round trips, bytes written by older code
still parse, malformed bytes read as None (or a marker), never a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.output_chunks import UNREADABLE, Segment, encode_chunk, parse_chunk
from scheduler.registration import WorkerRegistration
from scheduler.run_requests import RunRequest, StopRequest, Taken
from scheduler.runs import SKIPPED_FORBID, LockValue, RunRecord, RunStatus
from workers.peers import Peer

T = datetime(2026, 11, 23, 7, 5, tzinfo=UTC)
MALFORMED = [b"", b"not json", b"[1, 2]", b'"text"', b"null", b"{", b"\xff\xfe"]

# -- worker registration ---------------------------------------------------------

OLD_REGISTRATION = (
    b'{"id": "w1", "host": "h1", "pid": 42, "labels": {"zone": "a"}, "capacity": 4, '
    b'"running": 1, "version": "0.9.0", "clock": 1795000000.25, "skew": -0.0123, '
    b'"clock_ok": true, "clock_known": true, "draining": false, "jobs": 7, '
    b'"revision": 99, "lease": 1234}'
)
"""What workers/membership.py wrote before the model (json.dumps of a dict)."""


def test_registration_encodes_what_older_code_wrote() -> None:
    reg = WorkerRegistration.parse(OLD_REGISTRATION)
    assert reg is not None and reg.invalid == []
    assert reg.encode() == OLD_REGISTRATION, "byte for byte: older readers see the same value"
    assert (reg.id, reg.host, reg.pid, reg.capacity, reg.lease) == ("w1", "h1", 42, 4, 1234)
    assert reg.labels == {"zone": "a"} and reg.skew == -0.0123 and reg.clock_ok is True


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.integers(0, 1000),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_registration_round_trip(
    wid: str, labels: dict[str, str], cap: int, ok: bool, clock: float
) -> None:
    reg = WorkerRegistration(id=wid, labels=labels, capacity=cap, clock_ok=ok, clock=clock)
    assert WorkerRegistration.parse(reg.encode()) == reg


def test_registration_of_an_older_worker_lacks_newer_fields() -> None:
    old = json.dumps({"id": "w0", "labels": {"gpu": 1}, "capacity": 2, "running": 0}).encode()
    reg = WorkerRegistration.parse(old)
    assert reg is not None
    assert reg.clock_ok is True and reg.clock_known is True and reg.draining is False
    assert reg.labels == {"gpu": "1"}, "label values are text, as the peers compare them"
    assert reg.shown() == {"id": "w0", "labels": {"gpu": "1"}, "capacity": 2, "running": 0}
    peer = Peer.of(reg, lease=5)
    assert (peer.capacity, peer.running, peer.clock, peer.lease) == (2, 0, 0.0, 5)


@pytest.mark.parametrize("data", [*MALFORMED, b'{"host": "h"}', b'{"id": null}', b'{"id": [1]}'])
def test_malformed_registration_is_none(data: bytes) -> None:
    assert WorkerRegistration.parse(data) is None


def test_registration_fields_of_the_wrong_type_read_as_absent() -> None:
    reg = WorkerRegistration.parse(b'{"labels": "not-a-map", "capacity": "x", "draining": true}',
                                   worker_id="w2")  # fmt: skip
    assert reg is not None and reg.id == "w2", "the id from the key stands in"
    assert reg.invalid == ["capacity", "labels"]
    assert reg.labels == {} and reg.capacity is None and reg.draining is True
    assert reg.shown() == {"id": "w2", "draining": True}


def test_registration_keeps_fields_it_does_not_know() -> None:
    reg = WorkerRegistration.parse(b'{"id": "w3", "zone_hint": "eu"}')
    assert reg is not None and reg.shown() == {"id": "w3", "zone_hint": "eu"}


# -- stop and run requests ---------------------------------------------------------


def test_kill_request_is_what_the_store_wrote_before() -> None:
    assert StopRequest.kill(T).encode() == json.dumps({"requested_at": T.isoformat()}).encode()
    req = StopRequest.parse(StopRequest.kill(T).encode())
    assert req is not None and req.run_id is None and req.requested_at == T


def test_replace_request_is_what_the_worker_wrote_before() -> None:
    assert StopRequest.replace("r1").encode() == b'{"run_id": "r1"}'
    old = StopRequest.parse(b'{"run_id": "r1"}')
    assert old is not None and old.run_id == "r1"
    assert StopRequest.parse(b'{"run_id": null}') == StopRequest(), "no run named: none"
    assert StopRequest.replace(None).encode() == b"{}"


def test_run_request_and_taken_round_trip() -> None:
    req = RunRequest(request_id="20261123T070500Z-ab12cd34", requested_at=T)
    assert (
        req.encode()
        == json.dumps({"request_id": req.request_id, "requested_at": T.isoformat()}).encode()
    ), "the bytes the store wrote before"
    assert RunRequest.parse(req.encode()) == req
    assert Taken(worker="w1").encode() == b'{"worker": "w1"}'
    assert Taken.parse(b'{"worker": "w1"}') == Taken(worker="w1")


@pytest.mark.parametrize("data", [*MALFORMED, b'{"run_id": 5}', b'{"requested_at": "soon"}'])
def test_malformed_requests_are_none(data: bytes) -> None:
    assert StopRequest.parse(data) is None
    assert RunRequest.parse(data) is None
    assert Taken.parse(data) is None


def test_lock_value_names_its_run_leniently() -> None:
    lock = LockValue(worker="w1", run_id="r1", tick=T, lease=3)
    assert LockValue.run_id_of(lock.to_json()) == "r1"
    for bad in [*MALFORMED, b'{"run_id": 1}', b"{}"]:
        assert LockValue.run_id_of(bad) is None


# -- output chunks -----------------------------------------------------------------


def test_chunk_round_trip_and_old_bytes() -> None:
    segs = [("o", 1.0004, b"out\n"), ("e", 2.5, b"\xff err"), ("m", 3.0, b"[marker]\n")]
    data = encode_chunk(3, segs)
    assert data == (
        b'{"seq": 3, "segs": [["o", 1.0, "out\\n"], ["e", 2.5, "\\\\xff err"], '
        b'["m", 3.0, "[marker]\\n"]]}'
    ), "the bytes workers wrote before (time in ms, bad UTF-8 escaped)"
    assert parse_chunk(data) == (
        3,
        [Segment("stdout", 1.0, "out\n"), Segment("stderr", 2.5, "\\xff err"),
         Segment("etcron", 3.0, "[marker]\n")],
    )  # fmt: skip


@pytest.mark.parametrize("data", [*MALFORMED, b'{"seq": 1}', b'{"seq": "x", "segs": []}',
                                  b'{"seq": 1, "segs": [["o", 1]]}'])  # fmt: skip
def test_malformed_chunk_reads_as_a_marker(data: bytes) -> None:
    assert parse_chunk(data) == (-1, [Segment("etcron", 0.0, UNREADABLE)])


# -- run records -------------------------------------------------------------------


def test_run_record_constructors_write_the_old_shapes() -> None:
    start = RunRecord.started("j", "r1", T, worker="w1", lease=9, start=T, request_id="q")
    assert json.loads(start.to_json()) == {
        "job": "j", "run_id": "r1", "tick": "2026-11-23T07:05:00Z", "request_id": "q",
        "status": "running", "worker": "w1", "lease": 9, "start": "2026-11-23T07:05:00Z",
    }  # fmt: skip
    skip = RunRecord.skipped(start)
    assert skip.status is RunStatus.SKIPPED and skip.start is None
    assert skip.message == SKIPPED_FORBID and skip.run_id == "r1" and skip.worker == "w1"
    assert "start" not in json.loads(skip.to_json())
    lost = RunRecord.lost(start, end=T, message="gone")
    assert (lost.status, lost.end, lost.message, lost.start) == (RunStatus.LOST, T, "gone", T)
    killed = RunRecord.lost(start, end=T, message="gone", status=RunStatus.KILLED)
    assert killed.status is RunStatus.KILLED
    assert RunRecord.from_json(killed.to_json()) == killed
    assert start.status is RunStatus.RUNNING, "the constructors do not touch their input"


def test_lenient_registration_from_the_api_never_fails() -> None:
    """The CLI, the UI and doctor read the API's (or the store's) mappings leniently."""
    assert WorkerRegistration.lenient({}).id == "?"
    assert WorkerRegistration.lenient({"id": ["x"]}).id == "?"
    reg = WorkerRegistration.lenient({"id": "w1", "labels": "odd", "capacity": 2, "extra": 1})
    assert (reg.id, reg.labels, reg.capacity, reg.invalid) == ("w1", {}, 2, ["labels"])


def test_status_of_reads_only_the_status() -> None:
    rec = RunRecord.started("j", "r1", T, worker="w1", lease=9, start=T)
    assert RunRecord.status_of(rec.to_json()) == "running"
    assert RunRecord.status_of(RunRecord.skipped(rec).to_json()) == "skipped"
    for bad in [*MALFORMED, b"{}", b'{"status": null}']:
        assert RunRecord.status_of(bad) is None

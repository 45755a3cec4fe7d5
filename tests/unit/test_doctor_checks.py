"""The doctor's checks as pure functions: tables of what was read and what is said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.doctor import checks
from scheduler.doctor.report import Report, Status, fail, ok, warn
from scheduler.doctor.run import _cert_check
from scheduler.doctor.tls import CertExpiry
from scheduler.model import JobSpec
from scheduler.notify.deliveries import Delivery

NOW = 1_800_000_000.0
DAY = 86400.0


def _worker(**kw: Any) -> dict[str, Any]:
    base = {"id": "w1", "skew": 0.01, "clock": NOW, "clock_ok": True, "clock_known": True}
    return {**base, **kw}


@pytest.mark.parametrize(
    ("worker", "status", "words"),
    [
        (_worker(), Status.OK, "skew +0.010s"),
        (_worker(skew=0.3), Status.WARN, "over half"),
        (_worker(skew=-2.0, clock_ok=False), Status.FAIL, "skew -2.000s is outside"),
        (_worker(skew=0.2, clock_ok=False), Status.FAIL, "does not claim"),
        (_worker(clock_known=False, clock_ok=False, skew=0.0), Status.WARN, "not yet compared"),
        # a lone worker has no peer to compare with: only this host's clock shows it
        (_worker(skew=0.0, clock=NOW + 3600), Status.WARN, "+3600.0s from this host's"),
        (_worker(clock=NOW - 5), Status.OK, "skew"),  # a registration's age, not a skew
        (_worker(skew=None), Status.WARN, "no clock skew"),
    ],
)
def test_clock_check(worker: dict[str, Any], status: Status, words: str) -> None:
    got = checks.clock_check(worker, 0.5, NOW)
    assert got.status is status, got
    assert words in got.detail and got.name == "clock w1"


def test_workers_check() -> None:
    assert checks.workers_check([]).status is Status.WARN
    assert checks.workers_check([{"id": "a"}, {"id": "b", "draining": True}]).status is Status.OK
    every = checks.workers_check([{"id": "a", "draining": True}])
    assert every.status is Status.WARN and "draining" in every.detail


def test_versions_check() -> None:
    same = checks.versions_check([{"id": "w1", "version": "1.0"}], [{"id": "m", "version": "1.0"}])
    assert same.status is Status.OK and "all 2 on 1.0" in same.detail
    mixed = checks.versions_check(
        [{"id": "w1", "version": "1.0"}, {"id": "w2", "version": "1.1"}], []
    )
    assert mixed.status is Status.WARN
    assert "1.0 (worker w1)" in mixed.detail and "1.1 (worker w2)" in mixed.detail


def _job(name: str, **kw: Any) -> JobSpec:
    return JobSpec(name=name, schedule="@daily", command=["true"], **kw)


def test_selectors_check() -> None:
    live = [{"id": "w1", "labels": {"zone": "a"}}]
    good = checks.selectors_check([_job("a", selector={"zone": "a"}), _job("b")], [], live)
    assert good.status is Status.OK and "2 jobs" in good.detail
    stuck = checks.selectors_check(
        [_job("gpu", selector={"gpu": "x"}), _job("off", selector={"gpu": "y"}, suspend=True)],
        [("broken", "not JSON")],
        live,
    )
    assert stuck.status is Status.FAIL
    assert "gpu (selector gpu=x)" in stuck.detail and "off" not in stuck.detail
    assert "broken (not JSON)" in stuck.detail
    nobody = checks.selectors_check([_job("b")], [], [])
    assert nobody.status is Status.FAIL and "b (no live worker)" in nobody.detail


@pytest.mark.parametrize(
    ("size", "status"),
    [(None, Status.WARN), (10, Status.OK), (79, Status.OK), (80, Status.WARN), (96, Status.FAIL)],
)
def test_space_check(size: int | None, status: Status) -> None:
    assert checks.space_check(size, 100).status is status


def test_alarms_check() -> None:
    assert checks.alarms_check([]).status is Status.OK
    assert checks.alarms_check(["NONE"]).status is Status.OK
    nospace = checks.alarms_check(["NOSPACE", "NOSPACE"])
    assert nospace.status is Status.FAIL and "active: NOSPACE" in nospace.detail
    assert checks.alarms_check(None, "no permission").status is Status.WARN


def _delivery(sink: str, status: str, minute: int) -> Delivery:
    at = datetime.fromtimestamp(NOW, UTC) + timedelta(minutes=minute)
    return Delivery(
        job="j", run_id=f"r{minute}", event="failed", sink_kind="webhook", sink=sink,
        sink_id=sink, status=status, error="HTTP 500" if status == "failed" else "",
        created=at, updated=at,
    )  # fmt: skip


def test_notification_sinks_that_keep_failing() -> None:
    assert checks.notifications_check([]).status is Status.OK
    good = [_delivery("https://a", "delivered", m) for m in range(3)]
    # b failed before and recovered; c failed its last three
    b = [_delivery("https://b", "failed", m) for m in range(3)] + [
        _delivery("https://b", "delivered", 9)
    ]
    c = [_delivery("https://c", "delivered", 0)] + [
        _delivery("https://c", "failed", m) for m in (5, 6, 7)
    ]
    got = checks.notifications_check(good + b + c)
    assert got.status is Status.WARN, got
    assert "webhook https://c (HTTP 500)" in got.detail and "https://b" not in got.detail
    assert checks.notifications_check(good + b).status is Status.OK


@pytest.mark.parametrize(
    ("cert", "status", "words"),
    [
        (CertExpiry(NOW + 200 * DAY), Status.OK, "200 days"),
        (CertExpiry(NOW + 10 * DAY), Status.WARN, "expires in 10 days"),
        (CertExpiry(NOW - DAY), Status.FAIL, "expired on"),
        (CertExpiry(None, expired=True, error="certificate has expired"), Status.FAIL, "expired"),
        (CertExpiry(None, error="certificate not trusted: x"), Status.FAIL, "not trusted"),
        (None, Status.FAIL, "no TLS handshake"),
    ],
)
def test_cert_check(cert: CertExpiry | None, status: Status, words: str) -> None:
    got = _cert_check("e:2379", cert, NOW)
    assert got.status is status and words in got.detail, got


def test_exit_codes() -> None:
    assert Report([ok("a", "")]).exit_code == 0
    assert Report([ok("a", ""), warn("b", "")]).exit_code == 1
    assert Report([fail("b", "")]).exit_code == 1
    assert Report([fail("b", "")], unreachable=True).exit_code == 3
    assert Report([fail("config", "")], invalid_config=True).exit_code == 2
    line = fail("endpoint h:1", "unreachable").line()
    assert line == "FAIL  endpoint h:1: unreachable"

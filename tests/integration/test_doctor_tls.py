"""``etcron doctor`` against an etcd with TLS client certificates and users."""

from __future__ import annotations

from pathlib import Path

from scheduler.config import Config
from scheduler.doctor.report import Status
from scheduler.doctor.run import run_doctor
from tests.integration.test_security import (  # noqa: F401 - fixtures
    MASTER_PW,
    PREFIX,
    _cfg,
    certs,
    secured,
    tls_etcd,
)


async def test_tls_expiry_and_auth_are_checked(secured: str, certs: Path) -> None:  # noqa: F811
    good = Config(etcd=_cfg(secured, certs, "master", user="etcron-master", password=MASTER_PW))
    report = await run_doctor(good, timeout=3)
    by = {c.name: c for c in report.checks}
    tls = by[f"tls {secured}"]
    assert tls.status is Status.OK and "server certificate valid until" in tls.detail, tls
    assert (
        by["auth"].status is Status.OK and "user etcron-master authenticated" in by["auth"].detail
    )
    assert by[f"endpoint {secured}"].status is Status.OK
    assert "TLS, user etcron-master" in by["config"].detail
    assert by["config"].detail.endswith(f"prefix {PREFIX}")

    wrong = Config(etcd=_cfg(secured, certs, "master", user="etcron-master", password="nope"))
    report = await run_doctor(wrong, timeout=3)
    by = {c.name: c for c in report.checks}
    assert by["auth"].status is Status.FAIL and "refused" in by["auth"].detail
    assert by[f"endpoint {secured}"].status is Status.FAIL
    assert report.exit_code == 3  # no endpoint answered a read: nothing else checked

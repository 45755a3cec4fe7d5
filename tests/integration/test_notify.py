"""Notifications and the did-not-run detector, end to end: a real etcd, a real
master (``run_master`` with the leader's duties), in-process workers, a real
HTTP receiver (a ``http.server`` thread that checks nothing itself: the tests
verify every signature) and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from scheduler.clock import Clock
from scheduler.config import Config, EtcdConfig, MasterConfig, NotifyConfig, WorkerConfig
from scheduler.etcd.client import EtcdClient
from scheduler.keyspace import Keyspace
from scheduler.master.didnotrun import NO_RECORD
from scheduler.master.housekeeping import Housekeeper
from scheduler.master.server import leader_housekeeping, run_master
from scheduler.model import JobSpec
from scheduler.notify.deliveries import Delivery
from scheduler.notify.notifier import Notifier
from scheduler.runs import RunRecord, RunStatus, new_run_id
from tests.integration.test_cli import _env as cli_env
from tests.integration.test_cli import cli
from tests.support import wait_for
from tests.support.cluster import make_config, put_jobs, runs_of, workers

SECRET = b"test-" + secrets.token_hex(16).encode()
TOKEN = "notify-" + secrets.token_hex(8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# a webhook receiver -------------------------------------------------------------


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed(self, secret: bytes = SECRET) -> bool:
        stamp = self.headers["x-etcron-timestamp"]
        mac = hmac.new(secret, stamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["x-etcron-signature"], f"sha256={mac}")


@dataclass
class Receiver:
    url: str
    hooks: list[Hook] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    """path -> how many more requests to answer 500."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, path: str, **payload: Any) -> list[Hook]:
        with self.lock:
            hooks = list(self.hooks)
        return [
            h
            for h in hooks
            if h.path == path and all(h.json.get(k) == v for k, v in payload.items())
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with rcv.lock:
                left = rcv.fail.get(self.path, 0)
                code = 500 if left > 0 else 200
                rcv.fail[self.path] = max(0, left - 1)
                headers = {k.lower(): v for k, v in self.headers.items()}
                rcv.hooks.append(Hook(self.path, headers, body, code))
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rcv.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield rcv
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# an SMTP server -----------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


# the master ---------------------------------------------------------------------


@pytest.fixture
async def client(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    c = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    yield c
    await c.close()


def master_config(
    endpoints: list[str], prefix: str, tmp_path: Path, smtp_port: int = 25, **notify: Any
) -> Config:
    secret = tmp_path / "notify.secret"
    secret.write_bytes(SECRET + b"\n")
    notify.setdefault("did_not_run_grace", 0.5)
    notify.setdefault("did_not_run_interval", 0.2)
    return Config(
        etcd=EtcdConfig(endpoints=endpoints, prefix=prefix),
        master=MasterConfig(
            listen=f"127.0.0.1:{_free_port()}", token=TOKEN, housekeeping_interval=0.5
        ),
        worker=WorkerConfig(default_starting_deadline=1.0),
        notify=NotifyConfig.model_validate(
            {
                "secret_file": secret,
                "backoff": 0.1,
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "starttls": False},
                **notify,
            }
        ),
    )


@contextlib.asynccontextmanager
async def master(config: Config) -> AsyncIterator[str]:
    ready = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_master(config, ready=ready, stop=stop, housekeeping=leader_housekeeping)
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield f"http://{config.master.listen}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def deliveries(client: EtcdClient, ks: Keyspace, job: str) -> list[Delivery]:
    kvs, _ = await client.get_prefix(ks.job_notifications(job))
    return [Delivery.from_json(kv.value) for kv in kvs]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


FLAKY = 'if [ -e {flag} ]; then echo fine; exit 0; else touch {flag}; echo "broke" >&2; exit 3; fi'


async def test_failed_recovered_and_missed_webhooks_are_signed_and_failures_mailed(
    etcd_endpoints: list[str],
    prefix: str,
    tmp_path: Path,
    client: EtcdClient,
    receiver: Receiver,
    smtp: tuple[Mailbox, int],
) -> None:
    box, smtp_port = smtp
    ks = Keyspace(prefix)
    cfg = master_config(etcd_endpoints, prefix, tmp_path, smtp_port)
    flaky = JobSpec.model_validate(
        {
            "name": "flaky",
            "schedule": "* * * * * *",
            "shell": FLAKY.format(flag=tmp_path / "flag"),
            "notify": [
                {"on": ["failed", "recovered"], "webhook": receiver.url + "/flaky"},
                {"on": ["failed"], "email": "ops@example.com"},
            ],
        }
    )
    async with master(cfg) as url:
        await put_jobs(client, ks, flaky)
        async with workers([make_config(etcd_endpoints, prefix, "w1")]):
            failed = await wait_for(lambda: receiver.got("/flaky", event="failed"), timeout=20)
            await wait_for(lambda: receiver.got("/flaky", event="recovered"), timeout=20)
            await put_jobs(client, ks, flaky.model_copy(update={"suspend": True}))
        hook = failed[0]
        assert hook.signed(), hook.headers
        assert not hook.signed(b"another key")
        body = hook.json
        assert (body["job"], body["status"], body["exit_code"], body["worker"]) == (
            "flaky",
            "failed",
            3,
            "w1",
        )
        assert "broke" in body["output_tail"]
        assert body["path"] == f"/v1/jobs/flaky/runs/{body['run_id']}"
        assert abs(int(hook.headers["x-etcron-timestamp"]) - Clock().time()) < 60
        (recovered,) = receiver.got("/flaky", event="recovered")
        assert recovered.signed() and recovered.json["status"] == "succeeded"
        assert recovered.json["run_id"] > body["run_id"]
        assert len(receiver.got("/flaky", event="failed")) == 1  # once per event

        await wait_for(lambda: box.messages, timeout=10)
        (sender, rcpts, raw) = box.messages[0]
        mail = message_from_bytes(raw)
        assert rcpts == ["ops@example.com"] and sender == "etcron@localhost"
        assert "job flaky failed (failed, exit 3)" in str(mail["Subject"])
        assert body["run_id"] in mail.get_payload()  # type: ignore[operator]

        # every worker stopped: the next job's ticks get no record but the detector's
        silent = JobSpec.model_validate(
            {
                "name": "silent",
                "schedule": "* * * * * *",
                "shell": "true",
                "starting_deadline": "1s",
                "notify": [{"on": ["missed"], "webhook": receiver.url + "/silent"}],
            }
        )
        await put_jobs(client, ks, silent)
        missed = await wait_for(lambda: receiver.got("/silent", event="missed"), timeout=20)
        assert missed[0].signed()
        assert missed[0].json["status"] == "missed"
        assert missed[0].json["message"] == NO_RECORD
        recs = await runs_of(client, ks, "silent")
        assert recs and all(r.status is RunStatus.MISSED for r in recs)
        ticks = [r.tick for r in recs]
        assert len(ticks) == len(set(ticks)), "one record per tick"

        # and while the worker ran, no tick of flaky got a second record
        recs = await runs_of(client, ks, "flaky")
        assert len(recs) >= 2
        ticks = [r.tick for r in recs if not r.manual]
        assert len(ticks) == len(set(ticks)), sorted(ticks)
        # (a tick before the worker's clock was checked may be the detector's: one record still)
        ran = {r.tick for r in recs if r.start is not None}
        assert ran and not ran & {r.tick for r in recs if r.message.startswith(NO_RECORD)}

        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            metrics = samples((await http.get("/metrics")).text)
            assert metrics[("etcron_did_not_run_total", frozenset({("job", "silent")}))] >= 1
            key = (
                "etcron_notifications_total",
                frozenset({("sink_kind", "webhook"), ("outcome", "delivered")}),
            )
            assert metrics[key] >= 3
            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = await http.get("/v1/notifications", params={"job": "flaky"}, headers=auth)
            assert r.status_code == 200, r.text
            listed = r.json()["notifications"]
            assert {(d["event"], d["sink_kind"], d["status"]) for d in listed} == {
                ("failed", "webhook", "delivered"),
                ("recovered", "webhook", "delivered"),
                ("failed", "email", "delivered"),
            }
            assert all(
                receiver.url.split("//")[1] in d["sink"] and "/flaky" not in d["sink"]
                for d in listed
                if d["sink_kind"] == "webhook"
            )
            r = await http.get("/v1/notifications", params={"job": "Not A Job"}, headers=auth)
            assert r.status_code == 422
            r = await http.get("/v1/notifications", params={"limit": 1}, headers=auth)
            assert len(r.json()["notifications"]) == 1 and r.json()["more"] is True

        res = await cli(
            "notifications", "flaky", env=cli_env(ETCRON_SERVER=url, ETCRON_TOKEN=TOKEN)
        )
        assert res.code == 0, res.err
        lines = [ln for ln in res.out.splitlines() if ln.strip()]
        assert lines[0].split()[:4] == ["UPDATED", "JOB", "RUN", "ID"], res.out
        assert len(lines) == 4, res.out
        assert sum("delivered" in ln and "failed" in ln for ln in lines) == 2, res.out
        res = await cli(
            "notifications", "-o", "json", env=cli_env(ETCRON_SERVER=url, ETCRON_TOKEN=TOKEN)
        )
        assert res.code == 0, res.err
        assert {d["job"] for d in json.loads(res.out)["notifications"]} >= {"flaky", "silent"}


async def _leader(
    client: EtcdClient, ks: Keyspace, cfg: Config, identity: str
) -> tuple[Housekeeper, Notifier, asyncio.Task[Any]]:
    keeper = Housekeeper(client, ks, cfg.master, identity=identity)
    notifier = Notifier(client, ks, cfg, identity=identity, is_leader=keeper.is_leader)

    async def both() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(keeper.run())
            tg.create_task(notifier.run())

    return keeper, notifier, asyncio.create_task(both())


async def failed_record(client: EtcdClient, ks: Keyspace, job: str) -> str:
    now = Clock().now()
    run_id = new_run_id(now)
    rec = RunRecord(
        job=job, run_id=run_id, tick=now, status=RunStatus.FAILED, worker="w9",
        start=now, end=now, exit_code=1,
    )  # fmt: skip
    await client.put(ks.run(job, run_id), rec.to_json())
    return run_id


async def test_retries_deliver_once_and_a_new_leader_does_not_resend(
    etcd_endpoints: list[str], prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    ks = Keyspace(prefix)
    cfg = master_config(etcd_endpoints, prefix, tmp_path, did_not_run=False)
    clients = [await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints)) for _ in range(3)]
    etcd = clients[2]
    job = JobSpec.model_validate(
        {
            "name": "fails",
            "schedule": "0 0 1 1 *",
            "shell": "false",
            "notify": [{"on": ["failed"], "webhook": receiver.url + "/hook"}],
        }
    )
    await put_jobs(etcd, ks, job)
    receiver.fail["/hook"] = 2  # the sink fails twice, then takes it
    leaders = [await _leader(clients[i], ks, cfg, f"m{i}") for i in range(2)]
    try:
        await wait_for(lambda: any(k.is_leader.is_set() for k, _, _ in leaders), timeout=15)
        first = await failed_record(etcd, ks, "fails")
        await wait_for(
            lambda: [h for h in receiver.got("/hook", run_id=first) if h.answered == 200],
            timeout=15,
        )
        hooks = receiver.got("/hook", run_id=first)
        assert [h.answered for h in hooks] == [500, 500, 200]
        assert len({h.headers["x-etcron-delivery"] for h in hooks}) == 1
        assert all(h.signed() for h in hooks)
        (d,) = await wait_for(lambda: _delivered(etcd, ks, "fails"), timeout=10)
        assert (d.run_id, d.attempts, d.status) == (first, 3, "delivered")

        # the leader stops; the other one lists every record again and must not resend
        i = next(i for i, (k, _, _) in enumerate(leaders) if k.is_leader.is_set())
        leaders[i][2].cancel()
        await asyncio.gather(leaders[i][2], return_exceptions=True)
        other = leaders[1 - i]
        await wait_for(lambda: other[0].is_leader.is_set(), timeout=20)
        second = await failed_record(etcd, ks, "fails")
        await wait_for(lambda: receiver.got("/hook", run_id=second), timeout=15)
        assert len(receiver.got("/hook", run_id=first)) == 3
        assert [h.answered for h in receiver.got("/hook", run_id=second)] == [200]
        found = await deliveries(etcd, ks, "fails")
        assert {(x.run_id, x.attempts, x.master) for x in found} == {
            (first, 3, f"m{i}"),
            (second, 1, f"m{1 - i}"),
        }
    finally:
        for _, _, task in leaders:
            task.cancel()
        await asyncio.gather(*(t for _, _, t in leaders), return_exceptions=True)
        await etcd.delete(prefix, prefix=True)
        for c in clients:
            await c.close()


async def _delivered(client: EtcdClient, ks: Keyspace, job: str) -> list[Delivery]:
    found = await deliveries(client, ks, job)
    return found if found and all(d.status == "delivered" for d in found) else []


async def test_late_overran_while_running_and_the_rate_limit(
    etcd_endpoints: list[str], prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    ks = Keyspace(prefix)
    cfg = master_config(etcd_endpoints, prefix, tmp_path, did_not_run=False, rate_per_job=2)
    etcd = await EtcdClient.connect(EtcdConfig(endpoints=etcd_endpoints))
    hook = receiver.url + "/slow"
    job = JobSpec.model_validate(
        {
            "name": "slow",
            "schedule": "0 0 1 1 *",
            "shell": "sleep 100",
            "notify": [{"on": ["late", "overran"], "late": "1s", "overran": "2s", "webhook": hook}],
        }
    )
    await put_jobs(etcd, ks, job)
    keeper, _, task = await _leader(etcd, ks, cfg, "m0")
    try:
        await wait_for(keeper.is_leader.is_set, timeout=15)
        now = Clock().now()
        tick = now - timedelta(seconds=1.5)
        rec = RunRecord(
            job="slow", run_id=new_run_id(tick), tick=tick, status=RunStatus.RUNNING,
            worker="w1", start=now,
        )  # fmt: skip
        await etcd.put(ks.run("slow", rec.run_id), rec.to_json())
        late = await wait_for(lambda: receiver.got("/slow", event="late"), timeout=10)
        assert late[0].json["run_id"] == rec.run_id and late[0].signed()
        assert not receiver.got("/slow", event="overran")
        # still running 2 s after its start: overran, once, while it runs
        over = await wait_for(lambda: receiver.got("/slow", event="overran"), timeout=10)
        assert over[0].json["status"] == "running"
        assert (Clock().now() - now).total_seconds() >= 2
        # it ends (long): no second overran; over the rate: recorded rate_limited
        done = rec.model_copy(update={"status": RunStatus.FAILED, "end": Clock().now()})
        await etcd.put(ks.run("slow", rec.run_id), done.to_json())
        tick2 = Clock().now() - timedelta(seconds=5)
        third = rec.model_copy(update={"run_id": new_run_id(tick2), "tick": tick2})
        await etcd.put(ks.run("slow", third.run_id), third.to_json())
        limited = await wait_for(lambda: _with_status(etcd, ks, "slow", "rate_limited"), timeout=10)
        assert {d.run_id for d in limited} == {third.run_id}  # (late, and overran too)
        assert len(receiver.got("/slow", event="overran")) == 1
        assert not receiver.got("/slow", run_id=third.run_id)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await etcd.delete(prefix, prefix=True)
        await etcd.close()


async def _with_status(client: EtcdClient, ks: Keyspace, job: str, status: str) -> list[Delivery]:
    return [d for d in await deliveries(client, ks, job) if d.status == status]

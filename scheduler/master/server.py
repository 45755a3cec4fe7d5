"""``etcron master``: the HTTP API served by uvicorn, on one etcd connection.

Rules:

- The master refuses to start without a token (``master.tokens_file``,
  ``master.token_file`` or ``master.token``), with a short token or a token
  file others can read (:mod:`scheduler.master.access`):
  :class:`MasterConfigError` says which setting to change.
- It listens on ``master.listen`` (default ``127.0.0.1:8070``, loopback only),
  with TLS when ``master.tls_cert_file`` and ``master.tls_key_file`` are set;
  plain HTTP on an address other than loopback is a warning in the log.
  The socket is bound here before uvicorn starts, so a busy port is a clear
  :class:`MasterConfigError`, never a ``sys.exit`` from inside the event loop.
- This module installs no signal handlers (uvicorn's own are disabled); the CLI
  owns signals. Stopping: set ``stop`` (graceful: open requests finish) or
  cancel the task (graceful too, then the cancellation propagates).
- ``housekeeping``, when given, is started as a background task next to the
  server and cancelled when the server stops (leader-elected housekeeping
  plugs in here).
- Hostile clients are bounded (docs/api.md, "Limits"): the app sits behind
  :class:`~scheduler.master.http_guard.HttpGuard` (token before body,
  ``max_body_bytes``); connections use
  :class:`~scheduler.master.http_protocol.LimitedH11Protocol`
  (``request_timeout``, ``keep_alive_timeout``, ``max_connections``, kept
  within the descriptor limit); uvicorn's and asyncio's per-connection
  warnings are throttled to one a minute of each kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import structlog
import uvicorn

from scheduler.config import Config
from scheduler.etcd.client import EtcdClient
from scheduler.etcd.connect import connect_patiently
from scheduler.keyspace import Keyspace
from scheduler.master.access import MasterConfigError, master_tokens, tls_context
from scheduler.master.api import create_app
from scheduler.master.connections import connection_budget
from scheduler.master.http_protocol import LINGER_BYTES, HttpLimits, limited_protocol
from scheduler.master.log_throttle import throttled
from scheduler.master.metrics import MasterMetrics, MetricsMiddleware
from scheduler.signing import Signer
from scheduler.store import JobStore

log = structlog.get_logger("etcron.master")

ACCEPT_BATCH = 512
"""uvicorn's ``backlog`` (the listen queue, and connections accepted per loop turn) at most."""
MAX_HEAD_BYTES = 16 * 1024
"""Request line and headers larger than this are a 400 (h11)."""

Housekeeping = Callable[[EtcdClient, Keyspace, Config, MasterMetrics], Coroutine[Any, Any, None]]
"""A long-running coroutine started next to the API (cancelled at stop)."""


__all__ = ["MasterConfigError", "leader_housekeeping", "parse_listen", "run_master"]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the CLI owns signals), with an ``up`` event.

    With TLS, a connection reaches the protocol (and so its limits) only once its
    handshake is done: ``handshake_timeout`` bounds the handshake (asyncio's
    default is 60 s), which uvicorn does not expose; it is passed to the loop's
    ``create_server`` while uvicorn starts.
    """

    def __init__(self, config: uvicorn.Config, handshake_timeout: float | None = None) -> None:
        super().__init__(config)
        self.up = asyncio.Event()
        self.handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        create_server = loop.create_server
        timeout = self.handshake_timeout

        async def bounded(*args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", timeout)
            return await create_server(*args, **kwargs)

        patched = False
        if timeout is not None:
            with contextlib.suppress(AttributeError):  # a loop without instance attributes
                loop.create_server = bounded  # type: ignore[method-assign]
                patched = True
        try:
            await super().startup(sockets=sockets)
        finally:
            if patched:
                del loop.create_server
        if self.started:
            self.up.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise MasterConfigError(f"master.listen must be host:port, got {listen!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def master_signer(config: Config) -> Signer | None:
    """The key every job written is signed with (KeyFileError, exit 2, when unusable)."""
    path = config.master.signing_key_file
    if path is None:
        log.warning(
            "job signing is off: master.signing_key_file is not set; workers with "
            "worker.trusted_key_files refuse the jobs this master writes"
        )
        return None
    signer = Signer.from_file(path)
    log.info("signing jobs", key_id=signer.key_id)
    return signer


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say
    # TCP, and without it every response after the first on a keep-alive
    # connection waited ~40 ms (Nagle against the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MasterConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


async def run_master(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    housekeeping: Housekeeping | None = None,
) -> None:
    """Serve the API until ``stop`` is set or the task is cancelled."""
    tokens = master_tokens(config.master)
    tls = tls_context(config.master)
    signer = master_signer(config)
    host, port = parse_listen(config.master.listen)
    if tls is None and not _is_loopback(host):
        log.warning(
            "the API serves plain HTTP on a non-loopback address: tokens cross the network "
            "in clear; set master.tls_cert_file and master.tls_key_file",
            listen=config.master.listen,
        )
    limits, backlog = _limits(config)
    sock = _bind(host, port)
    try:
        connected = await connect_patiently(config.etcd, stop=stop, what="master")
    except BaseException:
        sock.close()
        raise
    if connected is None:
        sock.close()
        return
    client = connected
    keyspace = Keyspace(config.etcd.prefix)
    master = config.master
    metrics = MasterMetrics(client, keyspace, master)
    client.observe = metrics.etcd.observe
    app = MetricsMiddleware(
        create_app(
            JobStore(client, keyspace, signer=signer, keep_versions=master.keep_versions),
            tokens=tokens,
            public_docs=master.public_docs,
            max_spec_bytes=master.max_spec_bytes,
            max_body_bytes=master.max_body_bytes,
            etcd_quota_bytes=master.etcd_quota_bytes,
        ),
        metrics,
        token=master.metrics_token,
    )
    server = _Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
            http=limited_protocol(limits),
            backlog=backlog,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            ssl_context_factory=None if tls is None else (lambda _config, _default: tls),
        ),
        handshake_timeout=master.request_timeout,
    )
    tasks: list[asyncio.Task[Any]] = []
    quiet = contextlib.ExitStack()
    quiet.enter_context(throttled())
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="master-http")
    try:
        if housekeeping is not None:
            tasks.append(
                asyncio.create_task(_logged(housekeeping(client, keyspace, config, metrics)))
            )
        if stop is not None:
            tasks.append(asyncio.create_task(_stop_on(stop, server)))
        up = asyncio.create_task(server.up.wait())
        tasks.append(up)
        await asyncio.wait([up, serving], return_when=asyncio.FIRST_COMPLETED)
        if server.up.is_set():
            log.info(
                "master listening",
                listen=f"{host}:{sock.getsockname()[1]}",
                tls=tls is not None,
                tokens=tokens.names,
            )
            if ready is not None:
                ready.set()
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await serving
        raise
    finally:
        server.should_exit = True
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        sock.close()
        quiet.close()
        await client.close()
        log.info("master stopped")


def _limits(config: Config) -> tuple[HttpLimits, int]:
    """The connection limits, and the listen backlog, fitted to the descriptor limit."""
    master = config.master
    cap, backlog, fd_limit = connection_budget(master.max_connections, ACCEPT_BATCH)
    if cap < 1:
        raise MasterConfigError(
            f"no file descriptors left for API connections (limit {fd_limit}): raise the "
            "limit (ulimit -n, systemd LimitNOFILE=)"
        )
    if cap < master.max_connections:
        log.warning(
            "master.max_connections lowered to fit the file descriptor limit; raise the "
            "limit (ulimit -n, systemd LimitNOFILE=) to allow more",
            max_connections=master.max_connections,
            allowed=cap,
            fd_limit=fd_limit,
        )
    limits = HttpLimits(
        max_connections=cap,
        request_timeout=master.request_timeout,
        keep_alive_timeout=master.keep_alive_timeout,
        linger_bytes=max(LINGER_BYTES, 2 * master.max_body_bytes),
    )
    return limits, backlog


async def leader_housekeeping(
    client: EtcdClient, keyspace: Keyspace, config: Config, metrics: MasterMetrics
) -> None:
    """The :data:`Housekeeping` the ``etcron master`` command uses: leader-elected
    sweeps (told to ``metrics``), and the master's clock published for the
    workers' cluster time."""
    from scheduler.master.didnotrun import DidNotRun
    from scheduler.master.housekeeping import Housekeeper
    from scheduler.master.presence import publish_presence
    from scheduler.notify.notifier import Notifier

    identity = f"{socket.gethostname()}:{os.getpid()}"
    async with asyncio.TaskGroup() as tg:
        tg.create_task(publish_presence(client, keyspace, f"{socket.gethostname()}-{os.getpid()}"))
        keeper = Housekeeper(
            client, keyspace, config.master, identity=identity, on_sweep=metrics.sweep_done
        )
        metrics.leader = keeper.is_leader
        tg.create_task(keeper.run())
        # the leader's other duties, in their own tasks: they never hold up a sweep
        notifier = Notifier(
            client,
            keyspace,
            config,
            identity=identity,
            is_leader=keeper.is_leader,
            count=metrics.notified,
        )
        tg.create_task(notifier.run())
        if config.notify.did_not_run:
            detector = DidNotRun(
                client,
                keyspace,
                config,
                identity=identity,
                is_leader=keeper.is_leader,
                on_missed=metrics.missed,
            )
            tg.create_task(detector.run())


async def _logged(coro: Coroutine[Any, Any, None]) -> None:
    """Run a background coroutine; a crash is logged, never silently lost."""
    try:
        await coro
    except Exception:
        log.exception("housekeeping stopped with an error; the API keeps serving")


async def _stop_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    log.info("stopping: finishing open requests")
    server.should_exit = True

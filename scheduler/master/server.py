"""``etcron master``: the HTTP API served by uvicorn, on one etcd connection.

Rules:

- The master refuses to start without a token (``master.token`` or
  ``master.token_file``): :class:`MasterConfigError` says which settings to set.
- It listens on ``master.listen`` (default ``127.0.0.1:8070``, loopback only).
  The socket is bound here before uvicorn starts, so a busy port is a clear
  :class:`MasterConfigError`, never a ``sys.exit`` from inside the event loop.
- This module installs no signal handlers (uvicorn's own are disabled); the CLI
  owns signals. Stopping: set ``stop`` (graceful: open requests finish) or
  cancel the task (graceful too, then the cancellation propagates).
- ``housekeeping``, when given, is started as a background task next to the
  server and cancelled when the server stops (leader-elected housekeeping
  plugs in here).
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

from scheduler.config import Config, ConfigError
from scheduler.etcd.client import EtcdClient
from scheduler.etcd.connect import connect_patiently
from scheduler.keyspace import Keyspace
from scheduler.master.api import create_app
from scheduler.master.metrics import MasterMetrics, MetricsMiddleware
from scheduler.store import JobStore

log = structlog.get_logger("etcron.master")

Housekeeping = Callable[[EtcdClient, Keyspace, Config, MasterMetrics], Coroutine[Any, Any, None]]
"""A long-running coroutine started next to the API (cancelled at stop)."""


class MasterConfigError(ConfigError):
    """The master cannot start with this configuration; the message says why."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the CLI owns signals), with an ``up`` event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
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


def master_token(config: Config) -> str:
    try:
        token = config.master.resolved_token()
    except OSError as exc:
        raise MasterConfigError(
            f"master.token_file {config.master.token_file}: cannot read: {exc.strerror}"
        ) from exc
    if not token:
        raise MasterConfigError(
            "the master needs an API token: set master.token_file (recommended) or "
            "master.token in the config, or ETCRON_MASTER__TOKEN in the environment"
        )
    return token


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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
    token = master_token(config)
    host, port = parse_listen(config.master.listen)
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
    metrics = MasterMetrics(client, keyspace, config.master)
    client.observe = metrics.etcd.observe
    app = MetricsMiddleware(
        create_app(
            JobStore(client, keyspace), token=token, max_spec_bytes=config.master.max_spec_bytes
        ),
        metrics,
        token=config.master.metrics_token,
    )
    server = _Server(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=10
        )
    )
    tasks: list[asyncio.Task[Any]] = []
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
            log.info("master listening", listen=f"{host}:{sock.getsockname()[1]}")
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
        await client.close()
        log.info("master stopped")


async def leader_housekeeping(
    client: EtcdClient, keyspace: Keyspace, config: Config, metrics: MasterMetrics
) -> None:
    """The :data:`Housekeeping` the ``etcron master`` command uses: leader-elected
    sweeps (told to ``metrics``), and the master's clock published for the
    workers' cluster time."""
    from scheduler.master.housekeeping import Housekeeper
    from scheduler.master.presence import publish_presence

    identity = f"{socket.gethostname()}:{os.getpid()}"
    async with asyncio.TaskGroup() as tg:
        tg.create_task(publish_presence(client, keyspace, f"{socket.gethostname()}-{os.getpid()}"))
        keeper = Housekeeper(
            client, keyspace, config.master, identity=identity, on_sweep=metrics.sweep_done
        )
        metrics.leader = keeper.is_leader
        tg.create_task(keeper.run())


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

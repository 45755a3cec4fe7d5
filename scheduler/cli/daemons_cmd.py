"""The daemons: ``etcron master`` and ``etcron worker``.

Only this module installs SIGINT/SIGTERM handlers (``etcron master``: the first
signal stops gracefully, a second one cancels at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from scheduler.cli.common import ConfigOpt, globals_of
from scheduler.cli.target import read_config

if TYPE_CHECKING:
    from scheduler.config import Config


def register(app: typer.Typer) -> None:
    app.command()(master)
    app.command()(worker)


def master(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Run a master: the HTTP API and housekeeping. SIGTERM/SIGINT stop it gracefully.

    Exit 2: invalid configuration (no token, busy port, unreadable file);
    3: etcd refused the credentials.
    """
    import asyncio

    import structlog

    from scheduler import fatal
    from scheduler.logconfig import configure_logging

    cfg = read_config(config or globals_of(ctx).config)
    configure_logging("master", cfg.log.level, cfg.log.format)
    try:
        asyncio.run(_serve_master(cfg))
    except Exception as exc:
        raise typer.Exit(
            fatal.report(exc, structlog.get_logger("etcron.master"), "master")
        ) from exc


async def _serve_master(cfg: Config) -> None:
    import asyncio
    import signal

    from scheduler.master.server import leader_housekeeping, run_master

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await run_master(cfg, stop=stop, housekeeping=leader_housekeeping)
    except asyncio.CancelledError:
        if signals < 2:
            raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def worker(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Run a worker until SIGTERM (it drains running jobs first).

    Exit 2: invalid configuration (worker.id held by a live worker, unreadable
    TLS or password file); 3: etcd refused the credentials; 1: anything else.
    """
    from scheduler.logconfig import configure_logging

    cfg = read_config(config or globals_of(ctx).config)
    configure_logging("worker", cfg.log.level, cfg.log.format)
    raise typer.Exit(hand_over_to_worker(cfg))


def hand_over_to_worker(cfg: Config) -> int:
    """Hand the ``worker`` command to the workers package: :func:`workers.daemon.main`.

    The one place the CLI (the ``scheduler`` package) reaches into ``workers``.
    The import is deferred on purpose: every other command (``master``, the
    client commands) must not import the worker and its dependencies (the
    executor, cgroups, the guard), so they start fast and work where only the
    master is deployed. The exit status is the worker's.
    """
    import workers.daemon  # deferred: see the docstring

    return workers.daemon.main(cfg)

"""``etcron worker``: run a :class:`workers.worker.Worker` until a signal.

The only place in the worker that installs signal handlers. First SIGTERM or
SIGINT: drain (stop claiming, let running jobs finish within
``worker.drain_grace``, record them, release locks, revoke the lease). A second
signal: kill the children's process groups and exit.

A fatal error (a ``worker.id`` another live worker holds, bad etcd
credentials, an unreadable TLS file) ends it with one ``error:`` line on
stderr and exit 2 or 3 (:mod:`scheduler.fatal`); a signal before the worker
is ready (etcd down at start) is a clean stop, exit 0.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from scheduler import fatal
from scheduler.config import Config
from workers import orphans
from workers.worker import Worker

log = structlog.get_logger("etcron.worker")


async def serve(config: Config) -> int:
    worker = Worker(config)
    loop = asyncio.get_running_loop()
    signals = 0
    stopping: asyncio.Task[None] | None = None

    def on_signal(signum: int) -> None:
        nonlocal signals, stopping
        signals += 1
        if signals == 1:
            log.info("signal received: draining", signal=signal.Signals(signum).name)
            stopping = asyncio.ensure_future(worker.stop())
        else:
            log.warning("second signal: killing running jobs", signal=signal.Signals(signum).name)
            worker.kill()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    orphans.start()  # what a run leaves behind ends with it (workers.orphans)
    try:
        await worker.start(timeout=None)  # a large job table or a slow etcd may take a while
        await worker.wait()
    except RuntimeError:
        if stopping is None:
            raise
        await asyncio.wait({stopping})  # stopped before it was ready: not an error
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if stopping is not None and stopping.done() and stopping.exception() is not None:
        log.error("drain failed", error=repr(stopping.exception()))
        return 1
    return 0


def main(config: Config) -> int:
    """Run a worker with ``config`` until a signal; the exit status.

    The entry point the CLI hands ``etcron worker`` to
    (:func:`scheduler.cli.daemons_cmd.hand_over_to_worker`, its only caller there).
    """
    try:
        return asyncio.run(serve(config))
    except Exception as exc:
        return fatal.report(exc, log, "worker")

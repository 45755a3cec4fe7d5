"""Connect a daemon to etcd, waiting for as long as it takes.

A daemon (worker or master) started while etcd is down, or while DNS does not
yet resolve its endpoints, waits instead of exiting: ``connect_timeout``
bounds one attempt, not the daemon's life. Attempts back off up to
``MAX_DELAY``; a warning is logged at the first failure and then at most once
every ``LOG_EVERY`` seconds, so a long outage costs a line a minute, not a
traceback. Errors that waiting cannot fix are raised at once: bad
credentials, and (:func:`preflight`, a :class:`ConfigError`) a malformed
endpoint or a TLS or password file that cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from scheduler.config import ConfigError, EtcdConfig
from scheduler.etcd.client import EtcdAuthError, EtcdClient, EtcdError

log = structlog.get_logger("etcron.etcd")

MAX_DELAY = 5.0
LOG_EVERY = 60.0


async def connect_patiently(
    config: EtcdConfig, *, stop: asyncio.Event | None = None, what: str = "daemon"
) -> EtcdClient | None:
    """A connected client; None if ``stop`` is set before etcd answers."""
    preflight(config)
    delay = 0.2
    attempts = 0
    began = time.monotonic()
    logged = -LOG_EVERY
    while stop is None or not stop.is_set():
        attempts += 1
        try:
            return await _attempt(config, stop)
        except EtcdAuthError:
            raise
        except (EtcdError, OSError) as exc:
            now = time.monotonic()
            if now - logged >= LOG_EVERY:
                logged = now
                log.warning(
                    "etcd unreachable, waiting",
                    role=what,
                    endpoints=",".join(config.endpoints),
                    error=str(exc)[:200],
                    attempts=attempts,
                    waited=round(now - began, 1),
                )
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        delay = min(delay * 2, MAX_DELAY)
    return None


def preflight(config: EtcdConfig) -> None:
    """Endpoints are ``host:port`` and the TLS and password files readable, or
    a :class:`ConfigError` at once (not an etcd outage to wait out)."""
    for endpoint in config.endpoints:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"etcd.endpoints: {endpoint!r} is not host:port")
    for field in ("ca_file", "cert_file", "key_file", "password_file"):
        path = getattr(config, field)
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"etcd.{field} {path}: cannot read: {exc.strerror}") from exc


async def _attempt(config: EtcdConfig, stop: asyncio.Event | None) -> EtcdClient | None:
    """One bounded attempt, cut short when ``stop`` is set."""
    if stop is None:
        return await EtcdClient.connect(config)
    attempt = asyncio.ensure_future(EtcdClient.connect(config))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if attempt.done():
        return attempt.result()
    attempt.cancel()
    with contextlib.suppress(BaseException):
        await attempt
    return None

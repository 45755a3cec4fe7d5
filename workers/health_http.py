"""The worker's small HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``.

Rules:

- It listens on ``worker.listen`` (default ``127.0.0.1:8071``, loopback only;
  ``""`` or ``off``: no listener). It is bound before the worker connects to
  etcd, so ``/healthz`` answers while etcd is down; a busy port is a
  :class:`scheduler.config.ConfigError` (``etcron worker`` exits 2).
- ``GET /healthz``: 200 while the process (its event loop) is alive.
  ``GET /readyz``: 200 when the worker holds its session, has loaded its
  tables and its clock is within ``worker.max_clock_skew``; otherwise 503 with
  ``{"ready": false, "reason": "..."}``. ``GET /metrics``: the Prometheus text
  format. Anything else: 404; a method other than GET or HEAD: 405.
- Bounded: one request per connection (``Connection: close``), a request head
  of at most ``MAX_HEAD`` bytes read within ``READ_TIMEOUT`` seconds, at most
  ``MAX_CONNECTIONS`` connections at once (more are closed unanswered). No
  request body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable

import structlog

from scheduler.config import ConfigError
from scheduler.metrics import CONTENT_TYPE

log = structlog.get_logger("etcron.worker")

MAX_HEAD = 8192
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 32

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {503: "Service Unavailable"}

Response = tuple[int, str, bytes]


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"worker.listen must be host:port, '' or off, got {listen!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


class HealthServer:
    """Serves ``metrics()`` and ``readiness()`` (``""`` when ready, else why not)."""

    def __init__(self, listen: str, *, metrics: Callable[[], bytes], readiness: Callable[[], str]):
        self.host, self.port = parse_listen(listen)
        self.metrics = metrics
        self.readiness = readiness
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_HEAD, backlog=64
            )
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(
                f"worker.listen {self.host}:{self.port}: cannot listen: {why}; "
                "set worker.listen to a free host:port, or off"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("worker listening", listen=f"{self.host}:{self.port}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open <= MAX_CONNECTIONS:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                    method, status, ctype, body = self._answer(head)
                    writer.write(_response(status, ctype, b"" if method == "HEAD" else body))
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, cut or oversized request: closed unanswered
        except OSError:
            pass  # the client went away
        except Exception:
            log.exception("health listener: request failed")
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "GET", *_json(400, {"error": "bad request line"})
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz", "/readyz"):
            return method, *_json(404, {"error": f"no such path: {target[:100]}"})
        if method not in ("GET", "HEAD"):
            return method, *_json(405, {"error": "only GET and HEAD"})
        if target == "/healthz":
            return method, *_json(200, {"alive": True})
        if target == "/readyz":
            why = self.readiness()
            if why:
                return method, *_json(503, {"ready": False, "reason": why})
            return method, *_json(200, {"ready": True})
        return method, 200, CONTENT_TYPE, self.metrics()


def _json(status: int, body: dict[str, object]) -> Response:
    return status, "application/json", json.dumps(body).encode() + b"\n"


def _response(status: int, ctype: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body

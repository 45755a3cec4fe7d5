"""uvicorn's h11 protocol with time limits and a cap on connections.

Rules:

- A request's head and body must have arrived ``request_timeout`` after its
  first byte (after the connection opened, for its first request). Otherwise
  the connection is closed, with a ``408`` if part of the request came; the
  app, if it was waiting for the body, sees ``http.disconnect``.
- Between requests, a keep-alive connection is closed after
  ``keep_alive_timeout`` (uvicorn's own timer).
- Every connection is admitted by a :class:`ConnectionTable`: past
  ``max_connections`` the longest-idle connection is closed, or, when every
  connection is serving a request, the newcomer gets a ``503`` and is closed.
- An answer given before the request arrived whole (the guard's 401 and 413
  carry ``Connection: close``; a 408; a 400) is followed by a lingering close:
  the server sends its FIN, then reads and drops what the client still sends,
  for at most ``LINGER_SECONDS`` and ``linger_bytes``, then closes. A plain
  close with unread input would send a reset, and the client could lose the
  answer.
- uvicorn's answer to bytes that are not HTTP is a JSON ``400`` like the API's
  errors, written without h11 so that it cannot fail.
- Nothing here logs per connection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from scheduler.master.connections import ConnectionTable

LINGER_SECONDS = 2.0
LINGER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    request_timeout: float
    keep_alive_timeout: float
    linger_bytes: int = LINGER_BYTES


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail, "problems": []}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedH11Protocol(H11Protocol):
    """See the module rules; :func:`limited_protocol` binds the limits and the table."""

    limits: ClassVar[HttpLimits]
    table: ClassVar[ConnectionTable]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn types it int; it only ever passes it to call_later
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._deadline: asyncio.TimerHandle | None = None
        self._received = 0  # bytes of a request head still arriving
        self._admitted = False
        self._linger_left: int | None = None  # lingering: bytes still to drop

    # connection --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.table.admit(self):
            max_conn = self.table.max_connections
            detail = f"the master holds its most connections ({max_conn}); try again"
            self._close_with(_raw_response(503, "Service Unavailable", detail), linger=False)
            return
        self._admitted = True
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        self.table.release(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Close now: the table needs the slot (this connection serves no request)."""
        self._stop_deadline()
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            self.transport.close()

    # requests ----------------------------------------------------------------

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        if self._linger_left is not None:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
            return
        if not self._admitted or self.transport.is_closing():
            return
        if self._between_requests():
            if self._deadline is None:
                self._start_deadline()
            self._received += len(data)
        super().data_received(data)
        self._note_progress()

    def on_response_complete(self) -> None:
        self._received = 0
        if self._linger_left is not None:
            return
        self._stop_deadline()
        super().on_response_complete()  # may start a pipelined request
        if not self.transport.is_closing():
            if self._between_requests():
                self.table.idle(self)
            else:
                self._start_deadline()
                self._note_progress()

    def _note_progress(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        if not isinstance(cycle.transport, _LingerOnClose):
            cycle.transport = cast(asyncio.Transport, _LingerOnClose(self))
        self.table.busy(self)
        if not cycle.more_body:
            self._stop_deadline()  # the whole request is here

    # time limit --------------------------------------------------------------

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._timed_out)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        limit = f"{self.limits.request_timeout:g}"
        timeout = _raw_response(
            408,
            "Request Timeout",
            f"the request did not arrive within {limit}s (master.request_timeout)",
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            answered = cycle.response_started
            cycle.disconnected = True  # the app sees http.disconnect; its sends are dropped
            cycle.message_event.set()
            self._close_with(None if answered else timeout)
        else:
            self._close_with(timeout if self._received else None)

    # closing -----------------------------------------------------------------

    def close_after_response(self) -> None:
        """The request cycle closes the connection: linger if the body is still coming."""
        if self.conn.their_state is h11.SEND_BODY:
            self._close_with(None)
        elif self._linger_left is None:
            self.table.release(self)
            self.transport.close()

    def _close_with(self, response: bytes | None, *, linger: bool = True) -> None:
        """Write ``response`` (raw bytes) and close; linger unless told not to.

        Lingering: our FIN goes out after the response, what the client still
        sends is read and dropped (at most ``linger_bytes``, ``LINGER_SECONDS``),
        then the connection is closed. It keeps its slot, as an idle one.
        """
        self._stop_deadline()
        transport = self.transport
        if transport.is_closing() or self._linger_left is not None:
            return
        if response is not None:
            transport.write(response)
        if not (linger and transport.can_write_eof()):
            self.table.release(self)
            transport.close()
            return
        self._linger_left = self.limits.linger_bytes
        self.table.idle(self)
        self.flow.resume_reading()
        transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_SECONDS, transport.close)

    def send_400_response(self, msg: str) -> None:
        self._close_with(_raw_response(400, "Bad Request", "invalid HTTP request"))


class _LingerOnClose:
    """The transport as a request cycle sees it: ``close()`` may linger."""

    def __init__(self, protocol: LimitedH11Protocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_response()


def limited_protocol(
    limits: HttpLimits, table: ConnectionTable | None = None
) -> type[LimitedH11Protocol]:
    """A protocol class for one server: uvicorn builds one instance a connection."""

    class Bound(LimitedH11Protocol):
        pass

    Bound.limits = limits
    Bound.table = table if table is not None else ConnectionTable(limits.max_connections)
    return Bound

"""A TCP proxy for simulating network failures between a client and etcd.

It is a plain byte pipe, so gRPC/HTTP2 streams pass through unchanged. It runs in
the test's own event loop::

    async with TcpProxy("127.0.0.1", 2379) as proxy:
        client = connect(proxy.address)
        await proxy.cut()       # open connections reset, new ones reset on accept
        await proxy.restore()   # forwards again

``cut(blackhole=True)`` instead keeps sockets open and silently drops every byte
(a partition that sends no RST); ``restore()`` then resets those stuck connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

CHUNK = 64 * 1024  # bytes read at a time; with drain() this bounds buffering per direction
CONNECT_TIMEOUT = 5.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: SO_LINGER 0 makes the kernel send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and (unless blackholed) its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.blackholed = False

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class TcpProxy:
    """Listens on 127.0.0.1:<free port> and forwards each connection to ``host:port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = listen_port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cut = False
        self._blackhole = False
        self.accepted = 0  # connections accepted since start, forwarded or not
        self.refused = 0  # connections reset on accept while cut

    @classmethod
    def to(cls, endpoint: str) -> TcpProxy:
        """A proxy in front of ``"host:port"``."""
        host, port = endpoint.rsplit(":", 1)
        return cls(host, int(port))

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` to give the client instead of the target."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"{self.listen_host}:{self.port}"

    @property
    def target(self) -> str:
        return f"{self.target_host}:{self.target_port}"

    @property
    def connections(self) -> int:
        """Client connections open through the proxy right now."""
        return len(self._links)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def __repr__(self) -> str:
        state = "cut" if self._cut else "up"
        return f"TcpProxy({self.listen_host}:{self.port} -> {self.target}, {state})"

    # -- lifecycle

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._on_accept, self.listen_host, self.port, limit=CHUNK
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and reset every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._reset_all()
        handlers = list(self._handlers)
        for t in handlers:
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def cut(self, *, blackhole: bool = False) -> None:
        """Break the network until :meth:`restore`.

        Default: reset every open connection (both sides) and reset new ones right
        after accept, so clients notice at once. ``blackhole=True``: keep the sockets
        but drop every byte either way, like a partition that sends nothing back.
        """
        self._cut = True
        self._blackhole = blackhole
        if blackhole:
            for link in self._links:
                link.blackholed = True
        else:
            await self._reset_all()

    async def restore(self) -> None:
        """Forward again. Connections held by a blackhole are reset (their streams have
        lost bytes), so clients reconnect cleanly."""
        self._cut = False
        self._blackhole = False
        stuck = [link for link in self._links if link.blackholed]
        await self._reset_links(stuck)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals

    async def _reset_all(self) -> None:
        await self._reset_links(list(self._links))

    async def _reset_links(self, links: Sequence[_Link]) -> None:
        for link in links:
            link.reset()
        tasks = [t for link in links for t in link.tasks]
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in links:
            self._links.discard(link)

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._cut and not self._blackhole:
            self.refused += 1
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            if self._blackhole:
                link.blackholed = True
                me = asyncio.current_task()
                assert me is not None
                link.tasks = [me]
                await self._drop(reader)
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port, limit=CHUNK),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError):
                _reset(writer)
                return
            link.upstream = up_writer
            if link not in self._links or (self._cut and not self._blackhole):
                link.reset()  # cut while we were connecting
                return
            if self._blackhole:
                link.blackholed = True
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, link)),
                asyncio.create_task(self._pump(up_reader, writer, link)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            for w in (writer, link.upstream):
                if w is not None and not w.transport.is_closing():
                    w.transport.abort()

    @staticmethod
    async def _drop(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while await reader.read(CHUNK):
                pass

    @staticmethod
    async def _pump(
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        link: _Link,
    ) -> None:
        """Copy src to dst until EOF, then half-close dst; on error reset both ends."""
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                if link.blackholed:
                    continue  # partitioned: the bytes vanish
                dst.write(data)
                await dst.drain()  # back-pressure: never buffer more than the high-water mark
            if not link.blackholed and dst.can_write_eof() and not dst.transport.is_closing():
                dst.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            link.reset()
        # When both directions have seen EOF the handler closes both transports.


class ProxyGroup:
    """One :class:`TcpProxy` in front of each of several endpoints (a cluster's members)."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self.proxies = [TcpProxy.to(e) for e in endpoints]

    @property
    def addresses(self) -> list[str]:
        """The proxies' addresses, in the order of the endpoints given."""
        return [p.address for p in self.proxies]

    def __getitem__(self, i: int) -> TcpProxy:
        return self.proxies[i]

    def __len__(self) -> int:
        return len(self.proxies)

    async def start(self) -> None:
        for p in self.proxies:
            await p.start()

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.proxies))

    async def cut(self, *indexes: int, blackhole: bool = False) -> None:
        """Cut the given members (all when none given)."""
        for i in indexes or range(len(self.proxies)):
            await self.proxies[i].cut(blackhole=blackhole)

    async def restore(self, *indexes: int) -> None:
        """Restore the given members (all when none given)."""
        for i in indexes or range(len(self.proxies)):
            await self.proxies[i].restore()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

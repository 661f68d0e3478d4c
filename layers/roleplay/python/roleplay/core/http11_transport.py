"""An httpx transport for plain-HTTP upstreams: HTTP/1.1 with keep-alive over asyncio
streams, responses parsed by httptools (C).

Every chat turn makes one upstream call. httpx's own transport (httpcore, h11, anyio)
spent about 0.35 ms of CPU on it, a tenth of a text turn; this one about a tenth of
that (`bench/peers`, docs/performance.md). httpx stays the client: its API, event hooks,
timeouts (`request.extensions["timeout"]`), streaming and exception types are what the
rest of the layer sees. Errors are httpx's: `ConnectError`/`ConnectTimeout` when the
upstream cannot be reached, `ReadTimeout`/`WriteTimeout`, `PoolTimeout` when every
connection stays busy past the pool timeout, `RemoteProtocolError` for a connection that
breaks mid-answer. Connections are bounded by `max_connections` (in use and idle
together, as httpcore bounds them); up to `keepalive` wait idle per transport.

Only `http://` is served here: TLS and proxies stay with httpx's transport
(`core.http_pool` mounts this one only where it applies).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

READ_SIZE = 65_536
FINISH_S = 0.05
"""A response closed before its end may take this long to finish arriving and keep its
connection: a stream read to its `data: [DONE]` has only the chunked terminator left,
already sent (or on its way) by every OpenAI-compatible server."""
FINISH_BYTES = 65_536
"""...and no more than this much of it: a long rest is not worth reading to keep one."""


class _Connection:
    """One TCP connection to an upstream, and the key of the pool it returns to."""

    __slots__ = ("key", "reader", "writer")

    def __init__(self, key: tuple[str, int], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """Still open: the server closes idle keep-alive connections whenever it likes."""
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Answer:
    """httptools' callbacks for one response: the headers, then body pieces as they come."""

    __slots__ = ("done", "headers", "headers_done", "keep_alive", "parser", "pieces")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.pieces: deque[bytes] = deque()
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # only valid before the message ends

    def until_close(self) -> bool:
        """A body with neither a length nor chunks: it ends when the server closes."""
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Exchange:
    """One request's response on one connection: its body read on demand, the connection
    back in the pool once the body is complete, closed if the reader stops early."""

    def __init__(self, transport: Http11Transport, connection: _Connection, answer: _Answer,
                 read_s: float | None) -> None:
        self.transport = transport
        self.connection = connection
        self.answer = answer
        self.read_s = read_s
        self.finished = False
        self.closing = False
        """`_Body.aclose` is reading the rest: it, not the abandoned iterator, finishes."""

    async def feed(self) -> None:
        """Reads and parses the next piece the upstream sends."""
        try:
            data = await _timed(self.connection.reader.read(READ_SIZE), self.read_s, httpx.ReadTimeout)
        except OSError as error:
            raise httpx.ReadError(str(error) or type(error).__name__) from None
        if not data:
            if self.answer.headers_done and self.answer.until_close():
                self.answer.done, self.answer.keep_alive = True, False  # its end is the close
                return
            raise httpx.RemoteProtocolError("the upstream closed the connection mid-answer")
        try:
            self.answer.parser.feed_data(data)
        except httptools.HttpParserError as error:
            raise httpx.RemoteProtocolError(f"malformed HTTP answer: {error}") from None

    def finish(self, *, reusable: bool) -> None:
        """The response is done with: its slot freed, its connection idle or closed."""
        if self.finished:
            return
        self.finished = True
        del self.answer.parser  # it holds the answer's callbacks: a cycle left to the collector
        self.transport._give_back(self.connection, reusable=reusable)
        self.transport._slots.release()


class _Body(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange, answer = self.exchange, self.exchange.answer
        try:
            while True:
                while answer.pieces:
                    yield answer.pieces.popleft()
                if answer.done:
                    break
                await exchange.feed()
        except GeneratorExit:
            # Left early: the event loop closes this generator in a task of its own, which
            # may run while `aclose` still reads the rest of the answer.
            if not exchange.closing:
                exchange.finish(reusable=False)
            raise
        except BaseException:
            exchange.finish(reusable=False)
            raise
        exchange.finish(reusable=answer.keep_alive)

    async def aclose(self) -> None:
        """Closed before its end: the connection is kept when the rest arrives at once
        (a no-op once the body was read to its end)."""
        exchange, answer = self.exchange, self.exchange.answer
        if exchange.finished:
            return
        exchange.closing = True
        left = FINISH_BYTES
        try:
            async with asyncio.timeout(FINISH_S):
                while not answer.done and left > 0:
                    await exchange.feed()
                    left -= sum(len(piece) for piece in answer.pieces)
                    answer.pieces.clear()
        except (TimeoutError, httpx.TransportError):
            pass
        finally:
            exchange.finish(reusable=answer.done and answer.keep_alive)


async def _timed(awaitable: Any, seconds: float | None, raises: type[httpx.TimeoutException]) -> Any:
    """`asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` makes a task per call."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise raises(f"no progress in {seconds} s") from None


class Http11Transport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int, keepalive: int) -> None:
        self.max_connections = max_connections
        self.keepalive = keepalive
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol("this transport speaks plain HTTP only", request=request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = self._head(request, body)
        await _timed(self._slots.acquire(), timeouts.get("pool"), httpx.PoolTimeout)
        try:
            return await self._exchange(request, head + body, timeouts)
        except BaseException:
            self._slots.release()  # else the response's body frees it (`_Exchange.finish`)
            raise

    async def _exchange(self, request: httpx.Request, message: bytes,
                        timeouts: dict[str, float | None]) -> httpx.Response:
        key = (request.url.host, request.url.port or 80)
        for attempt in (0, 1):
            connection, reused = await self._connection(key, timeouts.get("connect"), request)
            answer = _Answer()
            exchange = _Exchange(self, connection, answer, timeouts.get("read"))
            try:
                connection.writer.write(message)
                try:
                    await _timed(connection.writer.drain(), timeouts.get("write"), httpx.WriteTimeout)
                except OSError as error:
                    raise httpx.WriteError(str(error) or type(error).__name__) from None
                while not answer.headers_done:
                    await exchange.feed()
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                self._drop(connection)
                if reused and attempt == 0 and not answer.headers:
                    continue  # a kept-alive connection the server had closed: once more, fresh
                raise
            except BaseException:
                self._drop(connection)
                raise
            return httpx.Response(answer.parser.get_status_code(), headers=answer.headers,
                                  stream=_Body(exchange), request=request,
                                  extensions={"http_version": b"HTTP/1.1"})
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self, key: tuple[str, int], connect_s: float | None,
                          request: httpx.Request) -> tuple[_Connection, bool]:
        """An idle connection to `key` (reused: True), or a new one; the caller holds a slot."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection, True
            self._drop(connection)
        if len(self._open) >= self.max_connections:  # idle ones to other upstreams fill the bound
            self._close_one_idle()
        try:
            reader, writer = await _timed(asyncio.open_connection(*key, limit=READ_SIZE),
                                          connect_s, httpx.ConnectTimeout)
        except OSError as error:
            raise httpx.ConnectError(str(error) or type(error).__name__, request=request) from None
        connection = _Connection(key, reader, writer)
        self._open.add(connection)
        return connection, False

    def _give_back(self, connection: _Connection, *, reusable: bool) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if reusable and connection.usable() and len(idle) < self.keepalive:
            idle.append(connection)
        else:
            self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    def _close_one_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                self._drop(idle.pop(0))
                return

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        url = request.url
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        has_length = False
        for name, value in request.headers.raw:
            lowered = name.lower()
            if lowered == b"transfer-encoding":
                continue  # the body is sent whole, with its length
            has_length = has_length or lowered == b"content-length"
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        return b"".join(lines)

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()

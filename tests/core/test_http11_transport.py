"""`core.http11_transport` against real HTTP servers: uvicorn (the server vLLM and
llama-cpp-python's server run on) for answers, streams and keep-alive, raw sockets for an
upstream that is down or silent. The chat paths over it are tested everywhere else (the
fake upstream and llama.cpp's server are real HTTP servers)."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from roleplay.core.http11_transport import Http11Transport, _Answer, _Body
from tests.support.upstream_server import closed_port_url, serve, silent_socket


def _recording_app(peers: list[str], release: threading.Event) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        assert request.client is not None
        peers.append(f"{request.client.host}:{request.client.port}")
        return {"got": await request.json(), "tag": request.headers.get("x-tag")}

    @app.get("/lines")
    async def lines() -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            yield b"first\n"
            await asyncio.to_thread(release.wait, 10)
            yield b"second\n"

        return StreamingResponse(pieces(), media_type="text/plain")

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        assert request.client is not None
        peers.append(f"{request.client.host}:{request.client.port}")

        async def pieces() -> AsyncIterator[bytes]:
            yield b"data: {}\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(pieces(), media_type="text/event-stream")

    return app


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[str], threading.Event]]:
    peers: list[str] = []
    release = threading.Event()
    with serve(_recording_app(peers, release)) as url:
        yield url, peers, release
        release.set()  # a stream still held ends, so the server stops at once


def _client(max_connections: int = 10, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http11Transport(max_connections=max_connections, keepalive=4),
                             timeout=httpx.Timeout(5.0, **timeouts))


def test_calls_in_sequence_share_one_kept_alive_connection(
        upstream: tuple[str, list[str], threading.Event]) -> None:
    url, peers, _ = upstream

    async def calls() -> list[httpx.Response]:
        async with _client() as client:
            return [await client.post(f"{url}/echo", json={"n": n, "text": "안녕"},
                                      headers={"X-Tag": f"t{n}"}) for n in range(20)]

    answers = asyncio.run(calls())
    assert [a.json() for a in answers] == [{"got": {"n": n, "text": "안녕"}, "tag": f"t{n}"}
                                          for n in range(20)]
    assert all(a.status_code == 200 and a.http_version == "HTTP/1.1" for a in answers)
    assert len(set(peers)) == 1


def test_an_answer_read_to_its_end_leaves_no_cycle_for_the_collector(
        upstream: tuple[str, list[str], threading.Event]) -> None:
    """The parser holds the answer's callbacks; a turn left that cycle for the collector,
    which then ran on every few dozen turns (issue 30)."""
    url, _, _ = upstream

    async def calls() -> None:
        transport = Http11Transport(max_connections=2, keepalive=2)
        for n in range(5):
            request = httpx.Request("POST", f"{url}/echo", json={"n": n})
            response = await transport.handle_async_request(request)
            await response.aread()
        await transport.aclose()

    gc.collect()
    gc.disable()
    try:
        asyncio.run(calls())
        assert [o for o in gc.get_objects() if isinstance(o, _Answer)] == []
    finally:
        gc.enable()


def test_a_streamed_answer_arrives_piece_by_piece(
        upstream: tuple[str, list[str], threading.Event]) -> None:
    url, _, release = upstream

    async def read() -> list[str]:
        seen: list[str] = []
        async with _client() as client, client.stream("GET", f"{url}/lines") as response:
            async for line in response.aiter_lines():
                seen.append(line)
                release.set()  # the second piece is sent only once the first was read
        return seen

    assert asyncio.run(read()) == ["first", "second"]


def test_a_stream_left_at_its_done_event_keeps_its_connection(
        upstream: tuple[str, list[str], threading.Event]) -> None:
    """`llm.dialect` stops reading at `data: [DONE]`, before the chunked terminator that
    ends the body: the connection still goes back to the pool, not one per stream."""
    url, peers, _ = upstream

    async def streams() -> None:
        async with _client() as client:
            for _ in range(3):
                async with client.stream("GET", f"{url}/events") as response:
                    async for line in response.aiter_lines():
                        if line == "data: [DONE]":
                            break

    asyncio.run(streams())
    assert len(peers) == 3 and len(set(peers)) == 1


def test_a_connection_the_upstream_closed_while_idle_is_replaced() -> None:
    peers: list[str] = []
    # uvicorn closes idle keep-alive connections after a second
    with serve(_recording_app(peers, threading.Event()), timeout_keep_alive=1) as url:
        async def calls() -> list[int]:
            async with _client() as client:
                first = await client.post(f"{url}/echo", json={})
                await asyncio.sleep(1.5)  # uvicorn has closed the idle connection
                second = await client.post(f"{url}/echo", json={})
                return [first.status_code, second.status_code]

        assert asyncio.run(calls()) == [200, 200]
    assert len(set(peers)) == 2


def test_an_upstream_that_is_down_is_a_connect_error() -> None:
    async def call() -> None:
        async with _client() as client:
            await client.post(f"{closed_port_url()}/echo", json={})

    with pytest.raises(httpx.ConnectError):
        asyncio.run(call())


def test_a_silent_upstream_is_a_read_timeout() -> None:
    async def call() -> None:
        async with _client(read=0.3) as client:
            await client.post(f"{url}/echo", json={})

    with silent_socket() as url, pytest.raises(httpx.ReadTimeout):
        asyncio.run(call())


def test_a_full_pool_waits_then_gives_up_and_a_closed_stream_frees_its_place(
        upstream: tuple[str, list[str], threading.Event]) -> None:
    url, _, _ = upstream

    async def crowd() -> int:
        async with _client(max_connections=1, pool=0.2) as client:
            held = await client.send(client.build_request("GET", f"{url}/lines"), stream=True)
            with pytest.raises(httpx.PoolTimeout):
                await client.post(f"{url}/echo", json={})
            await held.aclose()  # read only its first piece: the connection is dropped
            return (await client.post(f"{url}/echo", json={})).status_code

    assert asyncio.run(crowd()) == 200


def test_only_plain_http_is_spoken() -> None:
    async def call() -> None:
        async with _client() as client:
            await client.get("https://127.0.0.1:9/")

    with pytest.raises(httpx.UnsupportedProtocol):
        asyncio.run(call())


@contextmanager
def one_connection_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A raw socket server for one connection, answered by `answer`; yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_once() -> None:
        connection, _ = listener.accept()
        with connection:
            answer(connection)

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.join(timeout=5)
        listener.close()


def test_an_answer_without_a_length_ends_when_the_upstream_closes() -> None:
    """HTTP/1.1 lets a server send a body with neither Content-Length nor chunks and end it
    by closing the connection (RFC 9112, 6.3)."""
    def answer(connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        connection.sendall(b'{"answer": "whole"}')

    async def call(url: str) -> object:
        async with _client() as client:
            return (await client.post(f"{url}/x", json={})).json()

    with one_connection_server(answer) as url:
        assert asyncio.run(call(url)) == {"answer": "whole"}


def test_a_stream_left_at_done_keeps_its_connection_when_its_iterator_closes_meanwhile() -> None:
    """Left at `data: [DONE]`, the body's iterator is abandoned; the event loop closes it
    in a task of its own whenever the collector finds it. Here that close lands between
    the chunked terminator arriving and `aclose` parsing it, as it did once in CI (stop
    42: an AttributeError out of a whole reply)."""
    def answer(connection: socket.socket) -> None:
        connection.recv(65536)
        event = b"data: [DONE]\n\n"
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n"
                           + b"%x\r\n%s\r\n" % (len(event), event))
        connection.recv(1)  # the client has read the event
        connection.sendall(b"0\r\n\r\n")
        connection.recv(1)

    async def call(url: str) -> int:
        transport = Http11Transport(max_connections=1, keepalive=1)
        response = await transport.handle_async_request(httpx.Request("POST", f"{url}/events", json={}))
        body = response.stream
        assert isinstance(body, _Body)
        pieces = body.__aiter__()
        assert await anext(pieces) == b"data: [DONE]\n\n"
        connection = body.exchange.connection
        read = connection.reader.read

        async def read_then_close_the_abandoned_iterator(size: int) -> bytes:
            data = await read(size)
            await pieces.aclose()  # type: ignore[attr-defined]
            return data

        connection.reader.read = read_then_close_the_abandoned_iterator  # type: ignore[method-assign, assignment]
        connection.writer.write(b"!")  # the server sends the terminator
        await response.aclose()
        kept = sum(len(idle) for idle in transport._idle.values())
        await transport.aclose()
        return kept

    with one_connection_server(answer) as url:
        assert asyncio.run(call(url)) == 1

"""The layer's Redis connections write in the calling task, within the socket timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import TimeoutError as RedisTimeoutError

from roleplay.core.redis_connection import TaskFreeConnection, task_free


@pytest.mark.parametrize(("url", "chosen"), [
    ("redis://127.0.0.1:1/0", "TaskFreeConnection"), ("rediss://127.0.0.1:1/0", "TaskFreeSSLConnection"),
    ("unix:///tmp/redis.sock", "TaskFreeUnixConnection")])
def test_every_kind_of_url_gets_its_task_free_connection(url: str, chosen: str) -> None:
    assert task_free(BlockingConnectionPool.from_url(url).connection_class).__name__ == chosen


def test_a_command_is_written_without_a_task_of_its_own(redis_url: str) -> None:
    async def commands() -> tuple[list[bytes | str], int]:
        loop = asyncio.get_running_loop()
        started = 0

        def counting(loop: asyncio.AbstractEventLoop,
                     coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]) -> asyncio.Task[Any]:
            nonlocal started
            started += 1
            return asyncio.Task(coro, loop=loop)

        pool = BlockingConnectionPool.from_url(redis_url, decode_responses=True, socket_timeout=5.0)
        pool.connection_class = task_free(pool.connection_class)
        client = Redis.from_pool(pool)
        try:
            await client.echo("warm")  # connecting may start tasks of its own
            loop.set_task_factory(counting)
            answers = [await client.echo("one"), await client.echo("two")]
            loop.set_task_factory(None)
            return answers, started
        finally:
            await client.aclose()

    assert asyncio.run(commands()) == (["one", "two"], 0)


@asynccontextmanager
async def _deaf_server() -> AsyncIterator[int]:
    """Accepts connections and never reads them: a write fills the socket's buffers and
    waits (a Redis frozen or cut off mid-command)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def _no_handshake(_: Connection) -> None:
    """The deaf server answers nothing, so no handshake on connecting."""


@pytest.mark.parametrize("connection_class", [Connection, TaskFreeConnection])
def test_a_write_stuck_past_the_socket_timeout_fails_and_drops_the_connection(
    connection_class: type[Connection],
) -> None:
    """redis-py's own connection and the task-free one fail the same way."""
    async def stuck_write() -> tuple[str, bool]:
        async with _deaf_server() as port:
            connection = connection_class(host="127.0.0.1", port=port, socket_timeout=0.3,
                                          redis_connect_func=_no_handshake)
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py's, untyped
            with pytest.raises(RedisTimeoutError) as raised:
                await connection.send_packed_command([b"x" * (64 << 20)])
            return str(raised.value), connection.is_connected

    message, connected = asyncio.run(stuck_write())
    assert message == "Timeout writing to socket"
    assert not connected

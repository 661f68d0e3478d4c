"""redis-py's connections, writing each command without a task of its own.

redis-py bounds a command's write by `asyncio.wait_for`, which on Python 3.11 (the local
runner's) wraps the write in a new task: a task, a future and two more trips through the
event loop for every command, pipeline and script a turn sends, though the write almost
never waits. These connections bound the same write by `asyncio.timeout`, in the calling
task (what `wait_for` itself does from Python 3.12 on): the same timeout, the same errors
(redis-py's `TimeoutError` when it passes, the connection dropped), and nothing else of
redis-py's left out, since its own write runs inside.

`on_pooled_connection` runs an exchange of the layer's own (a script, reads sent
together) on one of a single server's pooled connections, as redis-py runs a command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")


class _TaskFreeWrites(AbstractConnection):
    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        # Unbounded inside (redis-py then writes in this task), bounded here instead; a
        # connection serves one caller at a time, so nobody else sees the swap.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:  # redis-py dropped the connection as the write was cancelled
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class TaskFreeConnection(_TaskFreeWrites, Connection):
    """redis-py's TCP connection."""


class TaskFreeSSLConnection(_TaskFreeWrites, SSLConnection):
    """redis-py's TLS connection (`rediss://`)."""


class TaskFreeUnixConnection(_TaskFreeWrites, UnixDomainSocketConnection):
    """redis-py's Unix socket connection (`unix://`, the embedded Redis's)."""


_TASK_FREE: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: TaskFreeConnection, SSLConnection: TaskFreeSSLConnection,
    UnixDomainSocketConnection: TaskFreeUnixConnection}


def task_free(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The task-free class for the one a URL chose; any other (a subclass of the caller's
    own) as it is."""
    return _TASK_FREE.get(connection_class, connection_class)


async def on_pooled_connection(redis: Redis, exchange: Callable[[Connection], Awaitable[T]]) -> T:
    """`exchange` on a connection of one server's pool, inside the connection's retry of a
    dropped connection (closed with its error, then sent again once), as redis-py's
    `execute_command` runs a command, without its layers around it (issue 30)."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await connection.retry.call_with_retry(  # type: ignore[no-any-return]
            lambda: exchange(connection), lambda error: connection.disconnect(error=error))
    finally:
        await pool.release(connection)

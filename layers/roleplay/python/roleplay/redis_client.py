"""The one Redis client factory of the layer.

`REDIS_URL` picks the server (the local runner points it at its embedded Redis when
unset). Clients decode to `str` and check idle connections before use, since a Lambda
may sit frozen between invocations longer than a server keeps a connection.
"""

from __future__ import annotations

from redis.asyncio import Redis

from roleplay.loop_bound import LoopBoundClient
from roleplay.settings import get_settings


def _open() -> Redis:
    settings = get_settings()
    return Redis.from_url(
        settings.effective_redis_url,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
    )


async def _close(client: Redis) -> None:
    await client.aclose()


redis_holder: LoopBoundClient[Redis] = LoopBoundClient(_open, _close)


async def get_redis() -> Redis:
    return await redis_holder.get()

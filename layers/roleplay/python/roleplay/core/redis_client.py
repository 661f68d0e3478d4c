"""The one Redis client factory of the layer.

`REDIS_URL` picks the server (the local runner points it at its embedded Redis when
unset). Clients decode to `str` and check idle connections before use, since a Lambda
may sit frozen between invocations longer than a server keeps a connection.

The pool is bounded and blocking: a burst of more concurrent requests than
`REDIS_MAX_CONNECTIONS` waits briefly for a free connection instead of failing with
"Too many connections" (redis-py's default pool refuses past 50).

A pooled connection that the server dropped (Redis restarted or failed over) fails on
its next use, and redis-py retries nothing unless told to; so a connection error is
retried once, at once, on a fresh connection. The first turns after a restart then
succeed instead of each stale connection costing a 503 (tests/ops/test_faults.py). Redis
that is really down still answers 503 at once (a refused connect is instant); a
timeout is not retried, so a slow Redis is not waited on twice and a command that
may have run is not sent twice.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from roleplay.core.loop_bound import LoopBoundClient
from roleplay.core.settings import get_settings


def _open() -> Redis:
    settings = get_settings()
    pool = BlockingConnectionPool.from_url(
        settings.effective_redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)


async def _close(client: Redis) -> None:
    await client.aclose()


redis_holder: LoopBoundClient[Redis] = LoopBoundClient(_open, _close)


async def get_redis() -> Redis:
    return await redis_holder.get()

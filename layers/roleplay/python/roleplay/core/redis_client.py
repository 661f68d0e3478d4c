"""The one Redis client factory of the layer: a single server or a Redis Cluster.

`REDIS_URL` picks the server (the local runner points it at its embedded Redis when
unset). It may name one node of a Redis Cluster (ElastiCache Serverless is always one):
whether it is, is asked once per process and URL (`INFO cluster`), unless
`REDIS_CLUSTER` says so; a cluster gets redis-py's asyncio cluster client, which sends
each command to the shard owning its key's slot and follows MOVED/ASK. Every caller
sees one interface (`get_redis`): commands, scripts and pipelines whose keys share a
slot (`roleplay.core.redis_keys` tags the keys used together); reads of keys of many
slots go through `read_strings`.

Clients decode to `str` and check idle connections before use, since a Lambda may sit
frozen between invocations longer than a server keeps a connection. One server's
connections write each command in the calling task (`roleplay.core.redis_connection`).

The pool is bounded and blocking: a burst of more concurrent requests than
`REDIS_MAX_CONNECTIONS` waits briefly for a free connection instead of failing with
"Too many connections" (redis-py's default pool refuses past 50; its cluster client
refuses once a node's pool is full, hence `WaitingCluster`).

A pooled connection that the server dropped (Redis restarted or failed over) fails on
its next use, and redis-py retries nothing unless told to; so a connection error is
retried once, at once, on a fresh connection. The first turns after a restart then
succeed instead of each stale connection costing a 503 (tests/ops/test_faults.py). Redis
that is really down still answers 503 at once (a refused connect is instant); a
timeout is not retried, so a slow Redis is not waited on twice and a command that
may have run is not sent twice. TLS comes with the URL (`rediss://`).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, MaxConnectionsError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from roleplay.core.loop_bound import LoopBoundClient
from roleplay.core.redis_connection import task_free
from roleplay.core.settings import Settings, get_settings

_cluster_urls: dict[str, bool] = {}
"""Per process: whether each URL used so far is a cluster."""
_ready_urls: set[str] = set()
"""Per process: the URLs probed and, if one server, migrated (`_prepare`)."""
_preparing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())

_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}


def _retry() -> Retry:
    return Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))


async def _is_cluster(settings: Settings) -> bool:
    if settings.redis_cluster != "auto":
        return settings.redis_cluster == "on"
    probe = Redis.from_url(settings.effective_redis_url, decode_responses=True, **_TIMEOUTS)
    try:
        return int((await probe.info("cluster")).get("cluster_enabled", 0)) == 1
    finally:
        await probe.aclose()


def is_cluster() -> bool:
    """Whether the current URL is a cluster (known once `get_redis` has answered)."""
    return _cluster_urls.get(get_settings().effective_redis_url, False)


class WaitingCluster(RedisCluster):
    """redis-py's cluster client raises MaxConnectionsError at once when a node's pool is
    full; this one waits, as the single server's blocking pool does: at most
    `in_flight_limit` (its `max_connections`) commands and pipelines are in flight per
    client, so no node's pool can be full, and one more waits up to `pool_timeout_s`."""

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]
    """redis-py's, without TimeoutError: as on one server, a command that may have run is
    not sent twice (a refused connection, a shard down or a slot moving are retried once)."""

    in_flight_limit: int = 64
    pool_timeout_s: float = 5.0
    _in_flight: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.in_flight_limit)
        try:
            async with asyncio.timeout(self.pool_timeout_s):  # no task of its own, as wait_for's
                await self._in_flight.acquire()
        except TimeoutError:
            raise MaxConnectionsError(
                f"no Redis connection free within {self.pool_timeout_s} s") from None
        try:
            yield
        finally:
            self._in_flight.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py does


class _WaitingPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        async with cast(WaitingCluster, self.cluster_client).turn():
            return await super().execute(raise_on_error, allow_redirections)


def _open() -> Redis:
    settings = get_settings()
    url = settings.effective_redis_url
    if _cluster_urls[url]:
        cluster = cast(WaitingCluster, WaitingCluster.from_url(
            url, max_connections=settings.redis_max_connections, decode_responses=True,
            health_check_interval=30, retry=_retry(), **_TIMEOUTS))
        cluster.in_flight_limit = settings.redis_max_connections
        cluster.pool_timeout_s = settings.redis_pool_timeout_s
        # The commands, scripts and single-slot pipelines the layer uses are the same on
        # both clients; typing it as the one spares every caller a union it cannot use.
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        decode_responses=True,
        health_check_interval=30,
        retry=_retry(),
        **_TIMEOUTS,
    )
    pool.connection_class = task_free(pool.connection_class)
    return Redis.from_pool(pool)


async def _close(client: Redis) -> None:
    await client.aclose()


redis_holder: LoopBoundClient[Redis] = LoopBoundClient(_open, _close)


async def get_redis() -> Redis:
    settings = get_settings()
    if settings.effective_redis_url not in _ready_urls:
        await _prepare(settings)
    return await redis_holder.get()


async def _prepare(settings: Settings) -> None:
    """Once per process and URL, before any request uses it: is it a cluster, and (one
    server) are the keys renamed to the current layout. Requests of the same event loop
    wait for each other here, so none reads a key before it is renamed; a failure leaves
    the URL unprepared, to be tried again by the next request."""
    url = settings.effective_redis_url
    lock = _preparing.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        if url in _ready_urls:
            return
        _cluster_urls[url] = await _is_cluster(settings)
        if not _cluster_urls[url]:
            from roleplay.core.key_migration import migrate_once

            await migrate_once(await redis_holder.get())
        _ready_urls.add(url)


async def read_strings(keys: Sequence[str]) -> list[str | None]:
    """The string values at `keys`, which may lie in different slots: one MGET on one
    server; on a cluster, one MGET per slot, sent to the shards side by side."""
    if not keys:
        return []
    redis = await get_redis()
    if isinstance(redis, RedisCluster):
        found = await redis.mget_nonatomic(list(keys))
    else:
        found = await redis.mget(list(keys))
    return [None if value is None else str(value) for value in found]


async def cluster_states() -> dict[str, str]:
    """On a cluster, `cluster_state` as each node reports it (`ok` or `fail`); on one
    server, nothing. A node that cannot be reached raises, as any command would."""
    redis: Any = await get_redis()
    if not isinstance(redis, RedisCluster):
        return {}
    answers: Any = await redis.cluster_info(target_nodes=RedisCluster.ALL_NODES)
    if not isinstance(answers, dict) or "cluster_state" in answers:
        answers = {"node": answers}
    return {str(node): str(info.get("cluster_state")) for node, info in answers.items()}

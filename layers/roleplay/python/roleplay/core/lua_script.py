"""Lua scripts that Redis runs by hash (EVALSHA), their body sent only when it lacks them.

The body crosses the network once per client, and again only after Redis answers
NOSCRIPT (a restart or a failover), instead of on every call as with EVAL: the per-turn
scripts are kilobytes, and EVAL also makes Redis hash the body each time.

On one Redis server a script is sent on a connection of the client's pool directly
(`redis_connection.on_pooled_connection`: the connection's own send and read, and the
client's retry of a dropped connection), without redis-py's layers around them (its
script object, argument checks, response callbacks (EVALSHA has none) and observability
hooks): a call 351k -> 319k instructions (issue 30). A cluster's client routes each
script to its shard itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from roleplay.core import metrics
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_connection import on_pooled_connection

if TYPE_CHECKING:
    from redis.asyncio.connection import Connection
    from redis.commands.core import AsyncScript


class LuaScript:
    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()
        """The hash Redis knows the script by (SCRIPT EXISTS, EVALSHA)."""
        self._registered: AsyncScript | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Runs the script on the current event loop's client; one round trip."""
        redis = await get_redis()
        started = time.perf_counter()
        if type(redis) is Redis:
            answer = await on_pooled_connection(redis, lambda connection: self._run(connection, keys, args))
        else:
            answer = await self._through_client(redis, keys, args)
        metrics.observe("redis_seconds", time.perf_counter() - started)
        return answer

    async def _through_client(self, redis: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._registered
        if script is None or script.registered_client is not redis:
            script = self._registered = redis.register_script(self.body)
        return await script(keys=list(keys), args=list(args))

    async def _run(self, connection: Connection, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            await connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return await connection.read_response()
        except NoScriptError:
            await connection.send_command("SCRIPT", "LOAD", self.body)
            await connection.read_response()
            await connection.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return await connection.read_response()

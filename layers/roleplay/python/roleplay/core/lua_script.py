"""Lua scripts that Redis runs by hash (EVALSHA), their body sent only when it lacks them.

The body crosses the network once per client, and again only after Redis answers
NOSCRIPT (a restart or a failover), instead of on every call as with EVAL: the per-turn
scripts are kilobytes, and EVAL also makes Redis hash the body each time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from roleplay.core import metrics
from roleplay.core.redis_client import get_redis

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript


class LuaScript:
    def __init__(self, body: str) -> None:
        self.body = body
        self._registered: AsyncScript | None = None

    @property
    def sha(self) -> str:
        """The hash Redis knows the script by (SCRIPT EXISTS, EVALSHA)."""
        return hashlib.sha1(self.body.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Runs the script on the current event loop's client; one round trip."""
        redis = await get_redis()
        script = self._registered
        if script is None or script.registered_client is not redis:
            script = self._registered = redis.register_script(self.body)
        started = time.perf_counter()
        answer = await script(keys=list(keys), args=list(args))
        metrics.observe("redis_seconds", time.perf_counter() - started)
        return answer

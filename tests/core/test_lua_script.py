"""A script on one Redis server goes straight to a pooled connection (`LuaScript`), and
answers, fails and recovers as redis-py's own script object does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from local_runner.embedded_redis import EmbeddedRedis
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis

SHAPES = """
return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, {false, "nested"}, redis.status_reply("OK"), {}}
"""


def test_a_script_answers_what_redis_pys_own_script_answers(key_prefix: str) -> None:
    async def both() -> tuple[Any, Any]:
        client = await get_redis()
        keys, args = [f"{key_prefix}k"], ["일", "41"]
        ours = await LuaScript(SHAPES)(keys, args)
        return ours, await client.register_script(SHAPES)(keys=keys, args=args)

    ours, theirs = asyncio.run(both())
    assert ours == theirs == [f"{key_prefix}k", "일", 42, [None, "nested"], "OK", []]


def test_a_script_error_is_raised_and_the_next_call_runs(key_prefix: str) -> None:
    failing = LuaScript("return redis.error_reply('ERR refused by the script')")
    echo = LuaScript("return ARGV[1]")

    async def calls() -> str:
        with pytest.raises(ResponseError, match="refused by the script"):
            await failing([f"{key_prefix}k"], [])
        return str(await echo([f"{key_prefix}k"], ["after"]))

    assert asyncio.run(calls()) == "after"


def test_a_connection_the_server_dropped_is_replaced_and_the_script_runs(
    settings_env: Callable[..., None], tmp_path: Path
) -> None:
    """Redis closed the pooled connection (a restart, a failover, an idle timeout): the
    call reconnects once, as redis-py's client does. A private Redis, so killing its
    clients disturbs no one else."""
    echo = LuaScript("return ARGV[1]")
    with EmbeddedRedis(tmp_path) as private_url:
        settings_env(REDIS_URL=private_url)
        killer = redis.Redis.from_url(private_url)

        async def calls() -> list[str]:
            first = await echo(["k"], ["before"])
            killed = killer.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
            return [first, await echo(["k"], ["after"])]

        try:
            assert asyncio.run(calls()) == ["before", "after"]
        finally:
            killer.close()

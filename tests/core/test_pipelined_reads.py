"""Reads sent together (`pipelined_reads`) answer what redis-py's pipeline answers, in one
round trip, and leave the pooled connection ready for the next caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from local_runner.embedded_redis import EmbeddedRedis
from roleplay.core.pipelined_reads import pipelined_reads
from roleplay.core.redis_client import get_redis


def commands_on(prefix: str) -> list[tuple[str, ...]]:
    return [("HGETALL", f"{prefix}{{s}}h"), ("HGETALL", f"{prefix}{{s}}none"), ("EXISTS", f"{prefix}{{s}}h"),
            ("GET", f"{prefix}{{s}}g"), ("GET", f"{prefix}{{s}}none"), ("ZCARD", f"{prefix}{{s}}z")]


def test_reads_answer_what_redis_pys_pipeline_answers(key_prefix: str) -> None:
    async def both() -> tuple[list[Any], list[Any]]:
        client = await get_redis()
        await client.hset(f"{key_prefix}{{s}}h", mapping={"owner": "u1", "title": "첫 대화"})
        await client.set(f"{key_prefix}{{s}}g", "value")
        await client.zadd(f"{key_prefix}{{s}}z", {"a": 1, "b": 2})
        ours = await pipelined_reads(client, commands_on(key_prefix))
        async with client.pipeline(transaction=False) as pipe:
            for command in commands_on(key_prefix):
                pipe.execute_command(*command)
            return ours, list(await pipe.execute())

    ours, theirs = asyncio.run(both())
    assert ours == theirs == [{"owner": "u1", "title": "첫 대화"}, {}, 1, "value", None, 2]


def test_a_command_that_fails_raises_after_every_reply_is_read(key_prefix: str) -> None:
    async def calls() -> list[Any]:
        client = await get_redis()
        hashed, empty = f"{key_prefix}{{s}}h", f"{key_prefix}{{s}}z"
        await client.hset(hashed, "owner", "u1")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await pipelined_reads(client, [("GET", hashed), ("EXISTS", hashed)])
        return await pipelined_reads(client, [("EXISTS", hashed), ("ZCARD", empty)])

    assert asyncio.run(calls()) == [1, 0]  # the connection kept no stale reply


def test_no_commands_ask_redis_nothing() -> None:
    async def call() -> list[Any]:
        return await pipelined_reads(await get_redis(), [])

    assert asyncio.run(call()) == []


def test_reads_on_a_connection_the_server_dropped_are_sent_again(
    settings_env: Callable[..., None], tmp_path: Path
) -> None:
    """A private Redis, so killing its clients disturbs no one else."""
    with EmbeddedRedis(tmp_path) as private_url:
        settings_env(REDIS_URL=private_url)
        killer = redis.Redis.from_url(private_url)

        async def calls() -> list[list[Any]]:
            client = await get_redis()
            first = await pipelined_reads(client, [("EXISTS", "k"), ("GET", "k")])
            assert killer.client_kill_filter(_type="normal", skipme=True) >= 1
            return [first, await pipelined_reads(client, [("EXISTS", "k"), ("GET", "k")])]

        try:
            assert asyncio.run(calls()) == [[0, None], [0, None]]
        finally:
            killer.close()

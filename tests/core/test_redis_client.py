"""The layer's Redis client under a burst: more concurrent requests than pooled connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.support.fake_llm import FakeLLM


def test_burst_beyond_the_pool_waits_for_a_connection_instead_of_failing(
    settings_env: Callable[..., None],
) -> None:
    from roleplay.core.redis_client import get_redis

    settings_env(REDIS_MAX_CONNECTIONS="2")

    async def burst() -> list[object]:
        client = await get_redis()
        return await asyncio.gather(*(client.blpop([f"nothing-{n}"], timeout=0.05)
                                      for n in range(12)))

    assert asyncio.run(burst()) == [None] * 12


def test_chat_turns_beyond_the_redis_pool_all_succeed(
    settings_env: Callable[..., None], fake_upstream: FakeLLM,
) -> None:
    from local_runner.app import build_app

    settings_env(REDIS_MAX_CONNECTIONS="3", MAX_CONCURRENT_USERS="100")  # redis-py alone refuses past 50
    transport = httpx.ASGITransport(app=build_app())

    async def burst() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
            answers = await asyncio.gather(*(http.post("/api/chat", json={
                "session_id": f"burst-{n}", "persona": "밝은 바리스타", "tts_enabled": False,
                "messages": [{"role": "user", "content": "안녕!"}]}) for n in range(60)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [200] * 60

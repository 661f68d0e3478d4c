"""A steady turn starts no task of its own: its reply's store is awaited alone when the
token ratio's and the conversation list's writes are not due (most turns)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import httpx

from tests.support.fake_llm import FakeLLM


def test_a_steady_turn_starts_no_task(settings_env: Callable[..., None], fake_upstream: FakeLLM) -> None:
    from local_runner.app import build_app

    settings_env(MAX_CONCURRENT_USERS="100")
    transport = httpx.ASGITransport(app=build_app())

    async def turns() -> list[str]:
        started: list[str] = []

        def counting(loop: asyncio.AbstractEventLoop,
                     coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]) -> asyncio.Task[Any]:
            started.append(getattr(coro, "__qualname__", repr(coro)))
            return asyncio.Task(coro, loop=loop)

        async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
            async def say(text: str) -> None:
                answer = await http.post("/api/chat", json={
                    "session_id": "steady", "persona": "밝은 바리스타", "tts_enabled": False,
                    "messages": [{"role": "user", "content": text}]})
                assert answer.status_code == 200, answer.text

            await say("안녕!")  # the first turn lists the conversation and learns the ratio
            await say("오늘 날씨 어때?")
            asyncio.get_running_loop().set_task_factory(counting)
            await say("비가 오네.")
            asyncio.get_running_loop().set_task_factory(None)
        return started

    assert asyncio.run(turns()) == []

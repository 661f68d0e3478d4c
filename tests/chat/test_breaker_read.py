"""A turn after a pause reads its upstream's breaker beside its session, not after it:
the breaker's one-second cache has gone stale by a conversation's next turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio.connection import AbstractConnection

from roleplay.ops import failover
from tests.support.fake_llm import FakeLLM


def _commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each Redis command sent from now on, in order (a pipeline's first)."""
    sent: list[str] = []
    send = AbstractConnection.send_packed_command

    async def recording(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        parts = [command] if isinstance(command, bytes | str) else list(command)
        payload = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts)
        sent.append(payload.split(b"\r\n")[2].decode())
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", recording)
    return sent


def test_a_turn_after_a_pause_reads_the_breaker_before_its_begin_script(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from local_runner.app import build_app

    settings_env(MAX_CONCURRENT_USERS="100")
    transport = httpx.ASGITransport(app=build_app())

    async def turns() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
            async def say(text: str) -> None:
                answer = await http.post("/api/chat", json={
                    "session_id": "paused", "persona": "밝은 바리스타", "tts_enabled": False,
                    "messages": [{"role": "user", "content": text}]})
                assert answer.status_code == 200, answer.text

            await say("안녕!")
            await say("오늘 날씨 어때?")
            failover._cache.clear()  # as a second after the last call leaves it
            after_pause = _commands(monkeypatch)
            await say("비가 오네.")
            monkeypatch.undo()
            steady = _commands(monkeypatch)
            await say("우산 있어?")
            monkeypatch.undo()
        return after_pause, steady

    after_pause, steady = asyncio.run(turns())
    assert "HMGET" in after_pause and "EVALSHA" in after_pause
    assert after_pause.index("HMGET") < after_pause.index("EVALSHA"), after_pause
    assert "HMGET" not in steady, "a breaker read within the second is not read again"

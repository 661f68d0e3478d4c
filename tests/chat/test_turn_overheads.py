"""What a turn costs besides its work: no task of its own on a steady turn (its reply's
store is awaited alone when the token ratio's and the list's writes are not due), and no
Redis round trip of its own for the upstream's breaker (read beside the session once its
one-second cache has gone stale, as by a conversation's next turn) or for the stored
character it plays (read beside the session when the turn names it, or this process
remembers the session's)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import httpx
import pytest

from roleplay.core.redis_client import is_cluster
from roleplay.ops import failover
from tests.support.fake_llm import FakeLLM
from tests.support.redis_writes import command_name, record_writes


def _turns_of(session_id: str) -> Callable[[httpx.AsyncClient, str], Awaitable[None]]:
    async def say(http: httpx.AsyncClient, text: str) -> None:
        answer = await http.post("/api/chat", json={
            "session_id": session_id, "persona": "밝은 바리스타", "tts_enabled": False,
            "messages": [{"role": "user", "content": text}]})
        assert answer.status_code == 200, answer.text

    return say


def _client(settings_env: Callable[..., None]) -> httpx.AsyncClient:
    from local_runner.app import build_app

    settings_env(MAX_CONCURRENT_USERS="100")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://b")


def _commands(writes: list[bytes]) -> list[str]:
    return [command_name(write) for write in writes]


def test_a_steady_turn_starts_no_task(settings_env: Callable[..., None], fake_upstream: FakeLLM) -> None:
    say = _turns_of("steady")

    async def turns() -> list[str]:
        started: list[str] = []

        def counting(loop: asyncio.AbstractEventLoop,
                     coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]) -> asyncio.Task[Any]:
            code = getattr(coro, "cr_code", None)
            where = code.co_filename if code is not None else ""
            if not (is_cluster() and f"{os.sep}redis{os.sep}" in where):  # its pipelines: a task per node
                started.append(getattr(coro, "__qualname__", repr(coro)))
            return asyncio.Task(coro, loop=loop)

        async with _client(settings_env) as http:
            await say(http, "안녕!")  # the first turn lists the conversation and learns the ratio
            await say(http, "오늘 날씨 어때?")
            asyncio.get_running_loop().set_task_factory(counting)
            await say(http, "비가 오네.")
            asyncio.get_running_loop().set_task_factory(None)
        return started

    assert asyncio.run(turns()) == []


def test_a_turn_after_a_pause_reads_the_breaker_before_its_begin_script(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    say = _turns_of("paused")

    async def turns() -> tuple[list[str], list[str]]:
        async with _client(settings_env) as http:
            await say(http, "안녕!")
            await say(http, "오늘 날씨 어때?")
            failover._cache.clear()  # as a second after the last call leaves it
            after_pause = record_writes(monkeypatch)
            await say(http, "비가 오네.")
            monkeypatch.undo()
            steady = record_writes(monkeypatch)
            await say(http, "우산 있어?")
            monkeypatch.undo()
        return _commands(after_pause), _commands(steady)

    after_pause, steady = asyncio.run(turns())
    assert "HMGET" in after_pause and "EVALSHA" in after_pause
    assert after_pause.index("HMGET") < after_pause.index("EVALSHA"), after_pause
    assert "HMGET" not in steady, "a breaker read within the second is not read again"


def test_a_turn_playing_a_stored_character_reads_it_with_its_session(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The first turn names the character; the next names only the session, whose
    character this process remembers: neither reads the character on its own."""
    if request.config.getoption("--redis") == "cluster":
        pytest.skip("a cluster splits the pipeline into a write per node: a GET leads some")

    async def turns() -> list[list[str]]:
        async with _client(settings_env) as http:
            made = await http.post("/api/characters", json={"name": "민지", "persona": "밝은 바리스타"})
            character_id = made.json()["data"]["id"]
            sent: list[list[bytes]] = []
            for n, body in enumerate(({"character_id": character_id}, {"session_id": "minji"})):
                sent.append(record_writes(monkeypatch))
                answer = await http.post("/api/chat", json={
                    **body, "session_id": "minji", "tts_enabled": False,
                    "messages": [{"role": "user", "content": f"{n}번째 인사"}]})
                monkeypatch.undo()
                assert answer.status_code == 200, answer.text
                assert "밝은 바리스타" in fake_upstream.chat_prompts[-1][0]["content"]
        return [_commands(writes) for writes in sent]

    for sent in asyncio.run(turns()):
        assert "HGETALL" in sent and "GET" not in sent, " ".join(sent)


def test_a_wrong_guess_of_the_sessions_character_still_plays_the_sessions(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As when another process changed the session's character since this one's last turn."""
    from roleplay.chat import preparation

    async def turns() -> str:
        async with _client(settings_env) as http:
            made = [(await http.post("/api/characters", json={"name": name, "persona": persona}))
                    .json()["data"]["id"] for name, persona in (("민지", "밝은 바리스타"),
                                                                 ("도윤", "무뚝뚝한 경비원"))]
            opened = await http.post("/api/chat", json={
                "character_id": made[0], "session_id": "guess", "tts_enabled": False,
                "messages": [{"role": "user", "content": "안녕!"}]})
            assert opened.status_code == 200, opened.text
            monkeypatch.setattr(preparation.session_characters, "get", lambda session: made[1])
            answer = await http.post("/api/chat", json={
                "session_id": "guess", "tts_enabled": False,
                "messages": [{"role": "user", "content": "또 왔어."}]})
            assert answer.status_code == 200, answer.text
        return fake_upstream.chat_prompts[-1][0]["content"]

    system = asyncio.run(turns())
    assert "밝은 바리스타" in system and "무뚝뚝한 경비원" not in system

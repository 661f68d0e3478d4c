"""A conversation's steady turn begins on its last turn's lookup (`sessions.known_lookups`)
instead of reading it again, one Redis round trip fewer; whatever changed it meanwhile
(through any route, or any other process) makes the begin script answer `stale` before
it writes, and the turn reads it and plays what is stored now."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio.connection import AbstractConnection

from roleplay.core.redis_client import is_cluster
from roleplay.ops import failover
from tests.support.fake_llm import FakeLLM
from tests.support.redis_writes import command_name, record_writes

Change = Callable[[httpx.AsyncClient, str], Awaitable[None]]


def _client(settings_env: Callable[..., None]) -> httpx.AsyncClient:
    from local_runner.app import build_app

    settings_env(MAX_CONCURRENT_USERS="100")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://b")


async def _say(http: httpx.AsyncClient, session_id: str, text: str, **body: Any) -> None:
    answer = await http.post("/api/chat", json={
        "session_id": session_id, "tts_enabled": False, **body,
        "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == 200, answer.text


def test_a_steady_turn_begins_without_reading_its_session_again(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def turns() -> tuple[list[str], bool]:
        async with _client(settings_env) as http:
            # the first turn, without a cookie yet, files the session under the address;
            # the second binds it to the cookie; the third reads it as it stands
            for text in ("안녕!", "오늘 날씨 어때?", "나는 라떼."):
                await _say(http, "steady", text, persona="밝은 바리스타")
            writes = record_writes(monkeypatch)
            await _say(http, "steady", "비가 오네.", persona="밝은 바리스타")
            monkeypatch.undo()
        return [command_name(write) for write in writes], is_cluster()

    sent, cluster = asyncio.run(turns())
    if cluster:  # the guard would read keys of other shards: every turn reads its lookup
        assert "HGETALL" in sent, sent
    else:
        assert sent == ["EVALSHA", "EVALSHA"], "the begin and the reply's store, nothing else"
    assert "밝은 바리스타" in fake_upstream.chat_prompts[-1][0]["content"]


def test_a_steady_turn_after_a_pause_reads_the_breaker_beside_its_begin(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The breaker's copy is a second old by a conversation's next turn: its read goes out
    with the begin script, before either is answered, not a round trip after it."""
    async def turns() -> tuple[list[str], bool]:
        async with _client(settings_env) as http:
            for text in ("안녕!", "오늘 날씨 어때?", "나는 라떼."):
                await _say(http, "paced", text, persona="밝은 바리스타")
            failover._cache.clear()  # as a second after the last call leaves it
            events: list[str] = []
            write, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

            async def writing(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
                sent = command if isinstance(command, bytes) else b"".join(
                    p if isinstance(p, bytes) else bytes(p) for p in command)
                events.append(command_name(sent))
                await write(self, command, check_health)

            async def reading(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
                answer = await read(self, *args, **kwargs)
                events.append("answer")
                return answer

            monkeypatch.setattr(AbstractConnection, "send_packed_command", writing)
            monkeypatch.setattr(AbstractConnection, "read_response", reading)
            await _say(http, "paced", "비가 오네.", persona="밝은 바리스타")
            monkeypatch.undo()
        return events, is_cluster()

    events, cluster = asyncio.run(turns())
    if cluster:
        pytest.skip("a cluster's turn reads its lookup, with the breaker beside it")
    assert events[:4] == ["EVALSHA", "HMGET", "answer", "answer"], events
    assert events[4:] == ["EVALSHA", "answer"], "then the reply's store alone"


async def _pin(http: httpx.AsyncClient, session_id: str) -> None:
    pinned = await http.post(f"/api/chat/sessions/{session_id}/pins", json={"text": "우산은 파란색"})
    assert pinned.status_code == 200, pinned.text


async def _summarize(http: httpx.AsyncClient, session_id: str) -> None:
    written = await http.put(f"/api/chat/sessions/{session_id}/summary",
                             json={"text": "둘은 비 오는 카페에서 처음 만났다"})
    assert written.status_code == 200, written.text


async def _set_persona(http: httpx.AsyncClient, session_id: str) -> None:
    put = await http.put("/api/users/me/persona", json={"name": "지훈", "description": "우산 장수"})
    assert put.status_code == 200, put.text


@pytest.mark.parametrize(("change", "now_in_prompt"), [
    (_pin, "우산은 파란색"),
    (_summarize, "둘은 비 오는 카페에서 처음 만났다"),
    (_set_persona, "우산 장수"),
])
def test_a_session_changed_since_the_last_turn_is_read_again(
    settings_env: Callable[..., None], fake_upstream: FakeLLM, change: Change, now_in_prompt: str,
) -> None:
    async def turns() -> str:
        async with _client(settings_env) as http:
            for text in ("안녕!", "오늘 날씨 어때?", "나는 라떼."):
                await _say(http, "changed", text, persona="밝은 바리스타")
            await change(http, "changed")
            await _say(http, "changed", "비가 오네.", persona="밝은 바리스타")
        return fake_upstream.chat_prompts[-1][0]["content"]

    assert now_in_prompt in asyncio.run(turns())


def test_a_character_edited_since_the_last_turn_is_played_as_edited(
    settings_env: Callable[..., None], fake_upstream: FakeLLM,
) -> None:
    async def turns() -> str:
        async with _client(settings_env) as http:
            made = await http.post("/api/characters", json={"name": "민지", "persona": "밝은 바리스타"})
            character_id = made.json()["data"]["id"]
            await _say(http, "edited", "안녕!", character_id=character_id)
            for text in ("오늘 날씨 어때?", "나는 라떼."):
                await _say(http, "edited", text)
            edited = await http.patch(f"/api/characters/{character_id}",
                                      json={"persona": "무뚝뚝한 경비원"})
            assert edited.status_code == 200, edited.text
            await _say(http, "edited", "비가 오네.")
        return fake_upstream.chat_prompts[-1][0]["content"]

    system = asyncio.run(turns())
    assert "무뚝뚝한 경비원" in system and "밝은 바리스타" not in system


def test_a_session_deleted_since_the_last_turn_begins_anew(
    settings_env: Callable[..., None], fake_upstream: FakeLLM,
) -> None:
    async def turns() -> list[dict[str, str]]:
        async with _client(settings_env) as http:
            for text in ("안녕!", "오늘 날씨 어때?", "나는 라떼."):
                await _say(http, "deleted", text, persona="밝은 바리스타")
            gone = await http.delete("/api/chat/sessions/deleted")
            assert gone.status_code == 200, gone.text
            await _say(http, "deleted", "처음 뵙겠습니다.", persona="밝은 바리스타")
            shown = await http.get("/api/chat/sessions/deleted")
            assert [m["content"] for m in shown.json()["data"]["messages"]][:1] == ["처음 뵙겠습니다."]
        return fake_upstream.chat_prompts[-1]

    prompt = asyncio.run(turns())
    assert [m["content"] for m in prompt[1:]] == ["처음 뵙겠습니다."]

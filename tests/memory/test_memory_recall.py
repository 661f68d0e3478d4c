"""A detail said early comes back into the prompt when the user asks about it, long after
the summary has folded it: through `/api/chat`, its stream and `/v1`; visible, deletable,
and kept in step with edits and rewinds. On a real Redis, over the scripted upstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from tests.memory.conftest import MAX_TOKENS
from tests.support.fake_llm import FakeLLM
from tests.support.sign_in import bearer
from tests.support.sse import sse_events

FACT = "참, 우리 집 고양이 이름은 나비야. 노란 털이 정말 예뻐."
QUESTION = "그런데 우리 집 고양이 이름이 뭐였는지 기억나?"


def _filler(n: int) -> str:
    return f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. 너는 어때?"


def _turn(client: TestClient, sid: str, text: str, **extra: object) -> dict[str, Any]:
    response = client.post("/api/chat", json={"session_id": sid, "max_tokens": MAX_TOKENS,
                                              "messages": [{"role": "user", "content": text}],
                                              **extra})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _conversation(client: TestClient, sid: str, turns: int = 24) -> None:
    """The fact in the second turn, then filler until the summary has long folded it."""
    _turn(client, sid, _filler(0))
    _turn(client, sid, FACT)
    for n in range(1, turns):
        _turn(client, sid, _filler(n))


def _system(llm: FakeLLM) -> str:
    return llm.chat_prompts[-1][0]["content"]


def _memories(client: TestClient, sid: str) -> dict[str, Any]:
    response = client.get(f"/api/chat/sessions/{sid}/memories")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_a_fact_folded_by_the_summary_is_recalled_when_asked(memory_llm: FakeLLM,
                                                             client: TestClient) -> None:
    _conversation(client, "m-recall")
    session = client.get("/api/chat/sessions/m-recall").json()["data"]
    assert session["summary_upto"] >= 3, "the fact's turn has left the window"
    assert "나비" not in (session["summary"] or ""), "the scripted summary keeps no detail"
    assert session["episodes"] > 0
    reply = _turn(client, "m-recall", QUESTION)
    system = _system(memory_llm)
    assert "[기억나는 지난 장면]" in system and "나비" in system
    assert system.index("[이전 대화 요약]") < system.index("[기억나는 지난 장면]"), "after the summary"
    assert reply["memories_recalled"], "the reply names what was recalled"
    listed = _memories(client, "m-recall")
    by_id = {e["id"]: e for e in listed["episodes"]}
    assert listed["recalled"] == reply["memories_recalled"]
    assert any("나비" in by_id[i]["text"] for i in reply["memories_recalled"])
    assert all(by_id[i]["last_recalled_at"] for i in reply["memories_recalled"])
    session = client.get("/api/chat/sessions/m-recall").json()["data"]
    assert session["memories_recalled"] == reply["memories_recalled"]


def test_an_unrelated_message_recalls_nothing_about_the_fact(memory_llm: FakeLLM,
                                                             client: TestClient) -> None:
    _conversation(client, "m-unrelated")
    reply = _turn(client, "m-unrelated", "Let us talk about something else entirely.")
    assert "나비" not in _system(memory_llm)
    assert not reply["memories_recalled"], "no word in common: nothing recalled"


def test_memory_stays_within_its_budget(memory_llm: FakeLLM, settings_env: Callable[..., None],
                                        client: TestClient) -> None:
    settings_env(MEMORY_TOKENS="60")
    _conversation(client, "m-budget")
    _turn(client, "m-budget", QUESTION)
    from roleplay.core.token_counter import count_tokens

    system = _system(memory_llm)
    block = system[system.index("[기억나는 지난 장면]"):]
    assert count_tokens(block) <= 60


def test_memory_tokens_zero_keeps_no_episodes_and_recalls_none(
        memory_llm: FakeLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MEMORY_TOKENS="0")
    _conversation(client, "m-off")
    reply = _turn(client, "m-off", QUESTION)
    assert "[기억나는 지난 장면]" not in _system(memory_llm)
    assert reply["memories_recalled"] is None
    assert _memories(client, "m-off")["episodes"] == []


def test_a_forgotten_episode_is_never_recalled_again(memory_llm: FakeLLM,
                                                     client: TestClient) -> None:
    _conversation(client, "m-forget")
    recalled = _turn(client, "m-forget", QUESTION)["memories_recalled"]
    listed = {e["id"]: e for e in _memories(client, "m-forget")["episodes"]}
    holding = [i for i in recalled if "나비" in listed[i]["text"]]
    for episode_id in holding:
        response = client.delete(f"/api/chat/sessions/m-forget/memories/{episode_id}")
        assert response.status_code == 200, response.text
        assert response.json()["data"]["forgotten"] is True
    _turn(client, "m-forget", QUESTION + " 정말?")
    assert "나비" not in _system(memory_llm)
    missing = client.delete(f"/api/chat/sessions/m-forget/memories/{holding[0]}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "memory_not_found"
    malformed = client.delete("/api/chat/sessions/m-forget/memories/not-an-episode")
    assert malformed.status_code in (400, 422)


def test_another_users_memories_do_not_exist_for_the_caller(
        memory_llm: FakeLLM, auth_on: Callable[..., dict[str, str]], client: TestClient) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    for n in range(3):
        client.post("/api/chat", headers=alice, json={
            "session_id": "m-private", "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": _filler(n)}]})
    assert client.get("/api/chat/sessions/m-private/memories", headers=alice).status_code == 200
    assert client.get("/api/chat/sessions/m-private/memories", headers=bob).status_code == 404


def test_an_edit_below_the_watermark_rebuilds_the_episode_from_the_new_text(
        memory_llm: FakeLLM, client: TestClient) -> None:
    _conversation(client, "m-edit")
    messages = client.get("/api/chat/sessions/m-edit").json()["data"]["messages"]
    fact = next(m for m in messages if m["content"] == FACT)
    response = client.patch(f"/api/chat/sessions/m-edit/messages/{fact['id']}",
                            json={"content": FACT.replace("나비", "치즈")})
    assert response.status_code == 200, response.text
    texts = [e["text"] for e in _memories(client, "m-edit")["episodes"]]
    assert not any("나비" in t for t in texts), "the stale episode went with the edit"
    for n in range(30, 40):  # the summary is rebuilt from what remains, and with it memory
        _turn(client, "m-edit", _filler(n))
    _turn(client, "m-edit", QUESTION)
    system = _system(memory_llm)
    assert "치즈" in system and "나비" not in system


def test_a_rewind_below_the_watermark_drops_the_episodes_past_it(memory_llm: FakeLLM,
                                                                 client: TestClient) -> None:
    _conversation(client, "m-rewind")
    messages = client.get("/api/chat/sessions/m-rewind").json()["data"]["messages"]
    fact = next(m for m in messages if m["content"] == FACT)
    response = client.delete(f"/api/chat/sessions/m-rewind/messages/{fact['id']}",
                             params={"and_after": "true"})
    assert response.status_code == 200, response.text
    episodes = _memories(client, "m-rewind")["episodes"]
    index = messages.index(fact)
    assert all(e["last"] < index for e in episodes)
    assert client.get("/api/chat/sessions/m-rewind").json()["data"]["episodes"] == len(episodes)


def test_the_streamed_done_event_names_the_recalled_episodes(memory_llm: FakeLLM,
                                                             client: TestClient) -> None:
    _conversation(client, "m-stream")
    response = client.post("/api/chat", json={
        "session_id": "m-stream", "max_tokens": MAX_TOKENS, "stream": True,
        "messages": [{"role": "user", "content": QUESTION}]})
    assert response.status_code == 200, response.text
    done = next(data for event, data in sse_events(response.text) if event == "done")
    assert done["memories_recalled"]
    assert "나비" in _system(memory_llm)


def test_regenerate_recalls_as_the_turn_did(memory_llm: FakeLLM, client: TestClient) -> None:
    _conversation(client, "m-regen")
    _turn(client, "m-regen", QUESTION)
    response = client.post("/api/chat/sessions/m-regen/regenerate", json={"max_tokens": MAX_TOKENS})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["memories_recalled"]
    assert "나비" in _system(memory_llm)


def test_the_openai_sdk_session_turn_recalls_too(memory_llm: FakeLLM, client: TestClient) -> None:
    """`/v1` clients re-send the whole history; the server's memory works for them alike."""
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="k", max_retries=0,
                        http_client=client)
    history: list[Any] = []
    for text in [_filler(0), FACT, *[_filler(n) for n in range(1, 24)], QUESTION]:
        history.append({"role": "user", "content": text})
        answer = sdk.chat.completions.create(model=memory_llm_model(), messages=history,
                                             max_tokens=MAX_TOKENS,
                                             extra_headers={"X-Session-Id": "m-v1"})
        history.append({"role": "assistant", "content": answer.choices[0].message.content or ""})
    assert "나비" in _system(memory_llm)
    assert client.get("/api/chat/sessions/m-v1").json()["data"]["memories_recalled"]


def memory_llm_model() -> str:
    from roleplay.core.settings import get_settings

    return get_settings().default_model


def test_memory_lists_none_for_a_new_session(memory_llm: FakeLLM, client: TestClient) -> None:
    _turn(client, "m-new", "안녕")
    assert _memories(client, "m-new") == {"session_id": "m-new", "episodes": [], "recalled": []}


def test_a_process_reads_a_sessions_episodes_again_only_when_they_changed(
        memory_llm: FakeLLM, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from roleplay.memory import recall as memory_recall
    from roleplay.sessions.store import SessionStore
    from tests.support.session_keys import session_key

    _conversation(client, "m-cache")
    key = session_key(client, "m-cache")
    reads: list[str] = []
    original = memory_recall._store.read_all

    async def counted(session_id: str) -> Any:
        reads.append(session_id)
        return await original(session_id)

    monkeypatch.setattr(memory_recall._store, "read_all", counted)

    async def twice() -> tuple[Any, Any]:
        window = await SessionStore().read_window(key)
        window = window.model_copy(update={"messages": [*window.messages[:-1], window.messages[-1]
                                                        .model_copy(update={"role": "user",
                                                                            "content": QUESTION})]})
        first = await memory_recall.recall(key, window, budget_tokens=200, language="ko")
        second = await memory_recall.recall(key, window, budget_tokens=200, language="ko")
        moved = window.model_copy(update={"memory_rev": window.memory_rev + 1})
        await memory_recall.recall(key, moved, budget_tokens=200, language="ko")
        return first, second

    memory_recall.forget_cached()
    first, second = asyncio.run(twice())
    assert first is not None and first == second
    assert len(reads) == 2, "read once per revision: the second turn used the process's copy"

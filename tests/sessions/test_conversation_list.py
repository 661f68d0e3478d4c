"""The user's list of conversations (issue 31): newest first, paged, by character, titled,
per user, bounded, with cold conversations still listed; through `/api/chat`, `/v1` (the
official `openai` SDK) and the session endpoints, on a real Redis (and the cluster pass).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from roleplay.sessions import conversation_archive
from tests.support.fake_llm import FakeLLM
from tests.support.sign_in import bearer

HOT_S = 3600


@pytest.fixture
def signed_in(auth_on: Callable[..., None], fake_upstream: FakeLLM) -> FakeLLM:
    auth_on(SESSION_HOT_TTL_S=str(HOT_S))
    return fake_upstream


def _say(client: TestClient, sid: str, text: str, user: str = "user-1", **extra: object) -> None:
    response = client.post("/api/chat", headers=bearer(user), json={
        "session_id": sid, "tts_enabled": False, "messages": [{"role": "user", "content": text}],
        **extra})
    assert response.status_code == 200, response.text


def _list(client: TestClient, user: str = "user-1", **query: object) -> dict[str, Any]:
    response = client.get("/api/chat/sessions", headers=bearer(user), params=query)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _sweep() -> None:
    asyncio.run(conversation_archive.sweep_idle(time.time() + HOT_S + 60))


def test_the_list_is_newest_first_with_title_preview_and_count(signed_in: FakeLLM,
                                                               client: TestClient) -> None:
    signed_in.reply = "카페 좋지! 라떼 마실래?"
    _say(client, "first", "우리 내일 카페 갈까? 창가 자리에 앉아서 비 오는 거 보고 싶어")
    _say(client, "second", "안녕")
    _say(client, "first", "좋아")
    items = _list(client)["items"]
    assert [item["session_id"] for item in items] == ["first", "second"]
    first = items[0]
    assert first["title"] == "우리 내일 카페 갈까? 창가 자리에 앉아서 비 오는 거 보고 싶어"
    assert first["preview"] == "카페 좋지! 라떼 마실래?"
    assert first["message_count"] == 4 and first["state"] == "hot"
    assert first["created_at"] <= first["updated_at"]


def test_the_list_pages_by_cursor_and_filters_by_character(signed_in: FakeLLM,
                                                            client: TestClient) -> None:
    minji = client.post("/api/characters", headers=bearer(), json={"name": "민지"}).json()["data"]
    for n in range(5):
        _say(client, f"c{n}", f"대화 {n}", character_id=minji["id"] if n % 2 else None)
    seen, cursor = [], None
    while True:
        page = _list(client, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["session_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["c4", "c3", "c2", "c1", "c0"]
    only = _list(client, character_id=minji["id"])["items"]
    assert [item["session_id"] for item in only] == ["c3", "c1"]
    bad = client.get("/api/chat/sessions", headers=bearer(), params={"cursor": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_cursor"


def test_a_conversation_can_be_retitled(signed_in: FakeLLM, client: TestClient) -> None:
    _say(client, "named", "안녕")
    renamed = client.patch("/api/chat/sessions/named", headers=bearer(), json={"title": "  첫 데이트  "})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["data"] == {"session_id": "named", "title": "첫 데이트"}
    _say(client, "named", "또 안녕")
    assert _list(client)["items"][0]["title"] == "첫 데이트", "a later turn keeps the title"
    blank = client.patch("/api/chat/sessions/named", headers=bearer(), json={"title": "   "})
    assert blank.status_code == 422 and blank.json()["success"] is False
    assert client.patch("/api/chat/sessions/nobody", headers=bearer(),
                        json={"title": "x"}).status_code == 404


def test_each_user_sees_only_their_own(signed_in: FakeLLM, client: TestClient) -> None:
    _say(client, "mine", "안녕", user="user-1")
    _say(client, "theirs", "안녕", user="user-2")
    assert [i["session_id"] for i in _list(client, user="user-1")["items"]] == ["mine"]
    assert [i["session_id"] for i in _list(client, user="user-2")["items"]] == ["theirs"]
    assert client.patch("/api/chat/sessions/theirs", headers=bearer("user-1"),
                        json={"title": "x"}).status_code == 404


def test_cold_conversations_stay_listed_and_come_back_on_their_next_turn(
        signed_in: FakeLLM, client: TestClient) -> None:
    signed_in.reply = "응, 기억해."
    _say(client, "cold", "내 강아지 이름은 초코야")
    _sweep()
    item = _list(client)["items"][0]
    assert (item["session_id"], item["state"], item["message_count"]) == ("cold", "cold", 2)
    assert item["title"] == "내 강아지 이름은 초코야" and item["preview"] == "응, 기억해."
    _say(client, "cold", "초코 기억나?")
    item = _list(client)["items"][0]
    assert (item["state"], item["message_count"]) == ("hot", 4)
    assert "초코야" in " ".join(m["content"] for m in signed_in.chat_prompts[-1])


def test_a_cold_conversation_comes_back_through_the_openai_api(
        signed_in: FakeLLM, client: TestClient) -> None:
    sdk = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused",
                        http_client=client, default_headers={**bearer(), "X-Session-Id": "via-v1"})
    history = [{"role": "user", "content": "Hello there"}]
    sdk.chat.completions.create(model="any-model", messages=history)  # type: ignore[arg-type]
    _sweep()
    assert _list(client)["items"][0]["state"] == "cold"
    history += [{"role": "assistant", "content": signed_in.reply},
                {"role": "user", "content": "Still there?"}]
    sdk.chat.completions.create(model="any-model", messages=history)  # type: ignore[arg-type]
    stored = client.get("/api/chat/sessions/via-v1", headers=bearer()).json()["data"]
    assert [m["content"] for m in stored["messages"]][:3] == ["Hello there", signed_in.reply,
                                                              "Still there?"]
    assert _list(client)["items"][0]["state"] == "hot"


def test_a_user_keeps_at_most_max_conversations(signed_in: FakeLLM, client: TestClient,
                                                settings_env: Callable[..., None]) -> None:
    settings_env(MAX_CONVERSATIONS="2")
    _say(client, "one", "안녕")
    _say(client, "two", "안녕")
    _say(client, "one", "또 안녕")  # an existing conversation goes on
    refused = client.post("/api/chat", headers=bearer(), json={
        "session_id": "three", "tts_enabled": False, "messages": [{"role": "user", "content": "안녕"}]})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "too_many_conversations"
    assert client.delete("/api/chat/sessions/two", headers=bearer()).status_code == 200
    _say(client, "three", "안녕")
    assert [i["session_id"] for i in _list(client)["items"]] == ["three", "one"]


def test_a_browsers_first_conversation_joins_its_list_once_its_cookie_takes_a_turn(
        fake_upstream: FakeLLM, client: TestClient) -> None:
    """Its first turn, sent before it held a cookie, is filed under its address; the
    cookie's next turn binds the conversation and lists it."""
    first = client.post("/api/chat", json={"tts_enabled": False,
                                           "messages": [{"role": "user", "content": "안녕"}]})
    sid = first.json()["data"]["session_id"]
    assert client.cookies
    client.post("/api/chat", json={"session_id": sid, "tts_enabled": False,
                                   "messages": [{"role": "user", "content": "또 안녕"}]})
    items = client.get("/api/chat/sessions").json()["data"]["items"]
    assert [(i["session_id"], i["message_count"], i["title"]) for i in items] == [(sid, 4, "안녕")]


def test_a_conversation_talked_in_again_at_once_is_not_touched_but_shows_its_last_message_time(
        signed_in: FakeLLM, client: TestClient, sync_redis: Any) -> None:
    from roleplay.core.redis_keys import redis_keys

    _say(client, "talk", "안녕")
    listing = redis_keys().user_conversations("user-1")
    touched = sync_redis.zscore(listing, "talk")
    time.sleep(0.01)
    _say(client, "talk", "또 안녕")
    assert sync_redis.zscore(listing, "talk") == touched  # within TOUCH_EVERY_S: no pipeline
    item = _list(client)["items"][0]
    assert item["updated_at"] > touched / 1000 and item["message_count"] == 4
    _say(client, "other", "다른 대화")
    _say(client, "talk", "돌아왔어")  # switching back always moves it up
    assert [i["session_id"] for i in _list(client)["items"]] == ["talk", "other"]

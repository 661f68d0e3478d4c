"""A card's lorebook, macros, greetings and the user's persona in real turns, against a
recording upstream (tests/support/fake_llm.py) over HTTP and real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from roleplay.chat.prompt import is_gemma_valid
from roleplay.llm.client import ChatMessage
from tests.support.card_files import BOOK, b64_json, png_card, v3_card


def _import(client: TestClient, card: dict[str, Any]) -> str:
    response = client.post("/api/characters/import", content=json.dumps(card).encode(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def _chat(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/chat", json={"tts_enabled": False, **body})
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def _say(client: TestClient, session_id: str, text: str, **body: Any) -> dict[str, Any]:
    return _chat(client, session_id=session_id, messages=[{"role": "user", "content": text}], **body)


def _system(llm: Any) -> str:
    prompt = llm.chat_prompts[-1]
    assert is_gemma_valid([ChatMessage(m["role"], m["content"]) for m in prompt])
    assert [m["role"] for m in prompt].count("system") == 1
    return str(prompt[0]["content"])


def _lore(client: TestClient, session_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/chat/sessions/{session_id}").json()["data"]["lorebook"])


def test_user_persona_is_kept_per_user(client: TestClient) -> None:
    assert client.get("/api/users/me/persona").json() == {"success": True, "data": None}
    put = client.put("/api/users/me/persona", json={"name": " 철수 ", "description": "손님"})
    assert put.status_code == 200
    assert client.get("/api/users/me/persona").json()["data"] == {"name": "철수",
                                                                  "description": "손님"}
    bad = client.put("/api/users/me/persona", json={"name": "", "description": "x"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"
    assert client.put("/api/users/me/persona", json={"name": "a", "age": 3}).status_code == 422


def test_opening_turn_offers_every_greeting_with_macros_replaced(
        fake_upstream: Any, client: TestClient) -> None:
    client.put("/api/users/me/persona", json={"name": "철수"})
    character_id = _import(client, v3_card())
    first = _chat(client, character_id=character_id)
    assert first["content"] == "어서 와, 철수!"
    assert first["greetings"] == ["어서 와, 철수!", "민짱: 또 왔네, 철수?"]
    assert first["greeting_index"] == 0
    swiped = _chat(client, character_id=character_id, greeting_index=1)
    assert swiped["content"] == "민짱: 또 왔네, 철수?"
    assert fake_upstream.chat_prompts == [], "a greeting costs no LLM call"
    out_of_range = client.post("/api/chat", json={"character_id": character_id,
                                                  "greeting_index": 5})
    assert out_of_range.status_code == 400
    assert out_of_range.json()["error"]["code"] == "invalid_greeting_index"


def test_a_keyword_fires_its_entry_and_constant_entries_are_always_there(
        fake_upstream: Any, client: TestClient) -> None:
    client.put("/api/users/me/persona", json={"name": "철수", "description": "{{char}}의 단골"})
    character_id = _import(client, v3_card(
        system_prompt="{{original}}\n- {{char}}는 반말을 쓴다.",
        post_history_instructions="{{user}}에게 짧게 답하세요."))
    sid = _chat(client, character_id=character_id,
                messages=[{"role": "user", "content": "사과를 먹고 싶어"}])["session_id"]

    system = _system(fake_upstream)
    assert "민짱의 카페는 사과 파이가 유명하다. 철수도 안다." in system, "fired, macros replaced"
    assert "카페 이름은 달빛이다." in system, "constant"
    assert "숨겨진 방" not in system, "disabled"
    assert "{{" not in system and "<USER>" not in system
    assert "상대방: 철수" in system
    assert "상대방 소개: 민짱의 단골" in system
    assert "현재 상황: 철수가 카페에 들어온다" in system
    assert "중요 지침:" in system and "- 민짱는 반말을 쓴다." in system, "{{original}} is ours"
    assert system.rstrip().endswith("철수에게 짧게 답하세요.")
    assert system.index("카페 이름은 달빛이다.") < system.index("민짱의 카페는"), "insertion_order"
    assert system.index("민짱의 카페는") < system.index("민짱는 밝은 바리스타다."), "before_char"
    lore = _lore(client, sid)
    assert [(e["id"], e["reason"]) for e in lore["fired"]] == [(2, "constant"), (1, "key")]

    _say(client, sid, "비밀이 뭐야? 그냥 커피 줘")
    _say(client, sid, "고마워")
    system = _system(fake_upstream)
    assert "사과 파이" not in system, "the keyword left the scan depth: the entry does not fire"
    assert "카페 이름은 달빛이다." in system
    assert [e["id"] for e in _lore(client, sid)["fired"]] == [2]


def test_a_message_without_the_keyword_does_not_fire_it(
        fake_upstream: Any, client: TestClient) -> None:
    character_id = _import(client, v3_card())
    _chat(client, character_id=character_id, messages=[{"role": "user", "content": "커피 줘"}])
    system = _system(fake_upstream)
    assert "사과 파이" not in system
    assert "카페 이름은 달빛이다." in system


def test_the_budget_cuts_the_lowest_priority_entries_first(
        fake_upstream: Any, client: TestClient) -> None:
    fake_upstream.ratio = 1.0
    entries = [
        {"keys": ["용"], "content": "낮은 우선순위 " + "가" * 60, "priority": 1,
         "insertion_order": 1, "id": "low", "enabled": True, "extensions": {}, "use_regex": False},
        {"keys": ["용"], "content": "높은 우선순위 " + "나" * 60, "priority": 9,
         "insertion_order": 3, "id": "high", "enabled": True, "extensions": {}, "use_regex": False},
        {"keys": ["용"], "content": "중간 우선순위 " + "다" * 60, "priority": 5,
         "insertion_order": 2, "id": "mid", "enabled": True, "extensions": {}, "use_regex": False},
    ]
    book = {**BOOK, "token_budget": 150, "entries": entries}
    character_id = _import(client, v3_card(character_book=book))
    sid = _chat(client, character_id=character_id,
                messages=[{"role": "user", "content": "용이 나타났다!"}])["session_id"]
    system = _system(fake_upstream)
    assert "높은 우선순위" in system and "중간 우선순위" in system
    assert "낮은 우선순위" not in system
    assert system.index("중간 우선순위") < system.index("높은 우선순위"), "insertion_order"
    lore = _lore(client, sid)
    assert [e["id"] for e in lore["fired"]] == ["mid", "high"]
    assert [e["id"] for e in lore["over_budget"]] == ["low"]
    assert lore["tokens"] <= 150


def test_the_stored_persona_is_read_afresh_on_every_turn(fake_upstream: Any,
                                                         client: TestClient) -> None:
    """A new session reads it alone, a later turn with the session's metadata (one round
    trip): either way the persona as it is now."""
    character_id = _import(client, v3_card())
    client.put("/api/users/me/persona", json={"name": "철수"})
    sid = _chat(client, character_id=character_id,
                messages=[{"role": "user", "content": "안녕"}])["session_id"]
    assert "상대방: 철수" in _system(fake_upstream)
    client.put("/api/users/me/persona", json={"name": "영희", "description": "학생"})
    _say(client, sid, "또 왔어")
    assert "상대방: 영희" in _system(fake_upstream) and "철수" not in _system(fake_upstream)
    _say(client, sid, "오늘은 영희야", user_persona={"name": "민수"})
    assert "상대방: 민수" in _system(fake_upstream), "the request's own persona wins"


def test_a_request_may_bring_its_own_user_persona(fake_upstream: Any, client: TestClient) -> None:
    client.put("/api/users/me/persona", json={"name": "철수"})
    character_id = _import(client, v3_card())
    _chat(client, character_id=character_id, user_persona={"name": "영희", "description": "학생"},
          messages=[{"role": "user", "content": "안녕"}])
    system = _system(fake_upstream)
    assert "상대방: 영희" in system and "상대방 소개: 학생" in system
    assert "현재 상황: 영희가 카페에 들어온다" in system
    assert "철수" not in system


def test_a_scenario_opponent_in_the_request_outranks_the_persona(
        fake_upstream: Any, client: TestClient) -> None:
    client.put("/api/users/me/persona", json={"name": "철수"})
    character_id = _import(client, v3_card())
    _chat(client, character_id=character_id, scenario={"opponent": "선생님"},
          messages=[{"role": "user", "content": "안녕"}])
    assert "상대방: 선생님" in _system(fake_upstream)


def test_a_session_without_a_lorebook_shows_none(fake_upstream: Any, client: TestClient) -> None:
    sid = _chat(client, messages=[{"role": "user", "content": "안녕"}], persona="밝은 소녀")[
        "session_id"]
    assert client.get(f"/api/chat/sessions/{sid}").json()["data"]["lorebook"] is None


@pytest.mark.llm
def test_an_imported_png_card_holds_a_conversation_on_the_real_llm(
        real_llm: Any, client: TestClient) -> None:
    """The card's prompt (lore, macros, persona) is one the real server's template takes."""
    body = png_card(("ccv3", b64_json(v3_card(first_mes="", alternate_greetings=[]))))
    character = client.post("/api/characters/import", content=body,
                            headers={"content-type": "image/png"}).json()["data"]
    client.put("/api/users/me/persona", json={"name": "Chulsoo"})
    reply = client.post("/api/chat", json={
        "character_id": character["id"], "max_tokens": 24, "tts_enabled": False,
        "messages": [{"role": "user", "content": "사과 파이 있어요?"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["usage"]["prompt_tokens"] > 0
    sid = reply.json()["data"]["session_id"]
    assert [e["id"] for e in _lore(client, sid)["fired"]] == [2, 1]


def test_each_signed_in_user_has_a_persona_of_their_own(settings_env: Any,
                                                       client: TestClient) -> None:
    from tests.support.sign_in import SECRET, bearer

    settings_env(JWT_SECRET=SECRET)
    assert client.get("/api/users/me/persona").status_code == 401
    client.put("/api/users/me/persona", json={"name": "철수"}, headers=bearer("u1"))
    client.put("/api/users/me/persona", json={"name": "영희"}, headers=bearer("u2"))
    assert client.get("/api/users/me/persona", headers=bearer("u1")).json()["data"]["name"] == "철수"
    assert client.get("/api/users/me/persona", headers=bearer("u2")).json()["data"]["name"] == "영희"

"""Memory end to end on the real model: SmolLM2 on llama.cpp writes the replies and the
summaries, and a detail from an early turn comes back when the user asks about it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.llm


def test_a_detail_from_an_early_turn_is_recalled_on_the_real_llm(
        real_llm: object, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", RECENT_TURNS_TO_KEEP="4", SUMMARY_MAX_TOKENS="96",
                 SUMMARY_LANGUAGE="en", PERSONA_LANGUAGE="en", MEMORY_TOKENS="200",
                 SUMMARY_RETRY_AFTER_S="0")
    character = client.post("/api/characters", json={
        "name": "Mia", "persona": "A cheerful barista in Seoul."}).json()["data"]
    lines = ["Hi Mia, how is the cafe today?",
             "By the way, my dog is called Biscuit and he loves the park."]
    lines += [f"Turn {n}: it rained again, so I stayed inside and read a novel by the window."
              for n in range(12)]
    sid = None
    for line in lines:
        body = {"character_id": character["id"], "max_tokens": 40,
                "messages": [{"role": "user", "content": line}]}
        if sid:
            body["session_id"] = sid
        response = client.post("/api/chat", json=body)
        assert response.status_code == 200, response.text
        sid = response.json()["data"]["session_id"]
    view = client.get(f"/api/chat/sessions/{sid}").json()["data"]
    assert view["summary_upto"] >= 3 and view["episodes"] > 0, view
    reply = client.post("/api/chat", json={"session_id": sid, "max_tokens": 32, "messages": [
        {"role": "user", "content": "What is my dog called again?"}]})
    assert reply.status_code == 200, reply.text
    recalled = reply.json()["data"]["memories_recalled"]
    assert recalled, "the question's words (dog, called) find the episode"
    episodes = {e["id"]: e["text"] for e in
                client.get(f"/api/chat/sessions/{sid}/memories").json()["data"]["episodes"]}
    assert any("Biscuit" in episodes[i] for i in recalled)

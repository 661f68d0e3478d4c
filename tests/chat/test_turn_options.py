"""How a turn samples is declared once (`TurnOptions`) and reaches the upstream the same way
from `/api/chat`, regenerate and continue; the OpenAI API maps into the same fields.

The upstream is the vLLM stand-in (tests/support/vllm_standin.py), which records each
chat request as vLLM's OpenAI server receives it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from roleplay.chat.control.models import GenerateRequest
from roleplay.chat.models import ChatRequest, TurnOptions
from tests.support.vllm_standin import VllmStandin

KNOBS = {"temperature": 0.2, "max_tokens": 64, "top_p": 0.8, "stop": ["\nUser:", "END"]}
S = "/api/chat/sessions"


def _sent(standin: VllmStandin) -> dict[str, object]:
    chat = [r for r in standin.requests if "messages" in r]
    last = chat[-1]
    return {name: last.get(name) for name in KNOBS}


def test_chat_and_control_requests_share_one_declaration_of_the_turn_options() -> None:
    shared = set(TurnOptions.model_fields)
    assert shared <= set(ChatRequest.model_fields)
    assert set(GenerateRequest.model_fields) == shared
    assert {"temperature", "max_tokens", "top_p", "stop", "model", "stream", "tts_mode"} <= shared


def test_a_chat_turn_sends_its_sampling_to_the_upstream(vllm_upstream: VllmStandin,
                                                         client: TestClient) -> None:
    response = client.post("/api/chat", json={
        "session_id": "s-knobs", "persona": "A barista.", "tts_enabled": False, **KNOBS,
        "messages": [{"role": "user", "content": "Hello there."}]})
    assert response.status_code == 200, response.text
    assert _sent(vllm_upstream) == KNOBS


def test_regenerate_and_continue_send_the_same_sampling_as_a_chat_turn(
        vllm_upstream: VllmStandin, client: TestClient) -> None:
    first = client.post("/api/chat", json={
        "session_id": "s-knobs-control", "persona": "A barista.", "tts_enabled": False,
        "messages": [{"role": "user", "content": "Hello there."}]})
    assert first.status_code == 200, first.text
    for action in ("regenerate", "continue"):
        response = client.post(f"{S}/s-knobs-control/{action}", json={"tts_enabled": False, **KNOBS})
        assert response.status_code == 200, response.text
        assert _sent(vllm_upstream) == KNOBS, action


def test_an_unknown_option_is_refused_as_on_chat(vllm_upstream: VllmStandin,
                                                 client: TestClient) -> None:
    for url in ("/api/chat", f"{S}/s-any/regenerate"):
        response = client.post(url, json={"top_a": 5, "messages": []} if url == "/api/chat"
                               else {"top_a": 5})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"] == "validation_error"


def test_a_bad_top_p_or_stop_is_a_clear_422(client: TestClient) -> None:
    for bad in ({"top_p": 0}, {"top_p": 1.5}, {"stop": [""]}, {"stop": ["x"] * 17}):
        response = client.post("/api/chat", json={
            "persona": "A barista.", "messages": [{"role": "user", "content": "hi"}], **bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["code"] == "validation_error"

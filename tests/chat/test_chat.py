"""POST /api/chat: sessions on real Redis, upstream failures, and the real LLM."""

import threading

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from tests.support.sse import sse_events
from tests.support.upstream_server import closed_port_url, serve, silent_socket


def _session(client: TestClient, session_id: str) -> dict:
    response = client.get(f"/api/chat/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _recording_upstream(seen: list[dict], reply: str = "응, 안녕!") -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        seen.append(body)
        return {"choices": [{"message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 3}}

    return app


def test_resent_whole_conversation_is_not_stored_twice(settings_env, client: TestClient) -> None:
    seen: list[dict] = []
    with serve(_recording_upstream(seen)) as url:
        settings_env(LLM_BASE_URL=url)
        first = client.post("/api/chat", json={"messages": [{"role": "user", "content": "안녕"}],
                                               "persona": "밝은 소녀"}).json()["data"]
        sid = first["session_id"]
        client.post("/api/chat", json={"session_id": sid, "messages": [
            {"role": "user", "content": "안녕"}, {"role": "assistant", "content": "응, 안녕!"},
            {"role": "user", "content": "뭐 해?"}]})
    messages = _session(client, sid)["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "안녕"), ("assistant", "응, 안녕!"), ("user", "뭐 해?"), ("assistant", "응, 안녕!")]
    assert first["usage"] == {"prompt_tokens": 42, "completion_tokens": 3, "estimated": False}
    assert seen[1]["messages"][0]["role"] == "system"
    assert "밝은 소녀" in seen[1]["messages"][0]["content"], "persona kept from the first turn"


def test_upstream_down_is_502_and_the_retry_does_not_duplicate(settings_env,
                                                                client: TestClient) -> None:
    settings_env(LLM_BASE_URL=closed_port_url())
    body = {"session_id": "s-retry", "messages": [{"role": "user", "content": "hello"}]}
    failed = client.post("/api/chat", json=body)
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "upstream_unavailable"
    assert [m["content"] for m in _session(client, "s-retry")["messages"]] == ["hello"]

    seen: list[dict] = []
    with serve(_recording_upstream(seen)) as url:
        settings_env(LLM_BASE_URL=url)
        assert client.post("/api/chat", json=body).status_code == 200
    assert [m["role"] for m in _session(client, "s-retry")["messages"]] == ["user", "assistant"]


def test_upstream_timeout_is_504(settings_env, client: TestClient) -> None:
    with silent_socket() as url:
        settings_env(LLM_BASE_URL=url, LLM_READ_TIMEOUT_S="0.3")
        response = client.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_upstream_error_is_502_with_its_message(settings_env, client: TestClient) -> None:
    app = FastAPI()
    app.post("/v1/chat/completions")(lambda: JSONResponse(
        {"object": "error", "message": "Conversation roles must alternate", "code": 400}, 400))
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502
    assert "Conversation roles must alternate" in response.json()["error"]["message"]


def test_racing_requests_on_one_session_lose_nothing(settings_env, client: TestClient) -> None:
    seen: list[dict] = []
    with serve(_recording_upstream(seen)) as url:
        settings_env(LLM_BASE_URL=url)
        errors: list[int] = []

        def send(n: int) -> None:
            response = client.post("/api/chat", json={
                "session_id": "s-race", "messages": [{"role": "user", "content": f"message {n}"}]})
            if response.status_code != 200:
                errors.append(response.status_code)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    messages = _session(client, "s-race")["messages"]
    assert sorted(m["content"] for m in messages if m["role"] == "user") == [
        f"message {n}" for n in range(8)]
    assert sum(m["role"] == "assistant" for m in messages) == 8


def test_turn_cap_answers_409(settings_env, client: TestClient) -> None:
    with serve(_recording_upstream([])) as url:
        settings_env(LLM_BASE_URL=url, MAX_TURNS="1")
        body = {"session_id": "s-cap", "messages": [{"role": "user", "content": "one"}]}
        assert client.post("/api/chat", json=body).status_code == 200
        body["messages"] = [{"role": "user", "content": "two"}]
        response = client.post("/api/chat", json=body)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "turn_limit_reached"


def test_opening_message_comes_from_the_character_without_the_llm(client: TestClient) -> None:
    character = client.post("/api/characters", json={
        "name": "민지", "first_message": "안녕! 오늘 뭐 했어?"}).json()["data"]
    reply = client.post("/api/chat", json={"character_id": character["id"]}).json()["data"]
    assert reply["content"] == "안녕! 오늘 뭐 했어?"
    messages = _session(client, reply["session_id"])["messages"]
    assert [(m["role"], m["content"], m.get("greeting")) for m in messages] == [
        ("assistant", "안녕! 오늘 뭐 했어?", True)]


def test_opening_message_falls_back_to_the_sample_dialogue(client: TestClient) -> None:
    character = client.post("/api/characters", json={
        "name": "민지", "sample_dialogue": "민지: 어서 와!\n철수: 안녕"}).json()["data"]
    reply = client.post("/api/chat", json={"character_id": character["id"]}).json()["data"]
    assert reply["content"] == "어서 와!"


@pytest.mark.parametrize("body", [
    {},
    {"messages": [{"role": "narrator", "content": "x"}]},
    {"messages": [{"role": "user", "content": "x"}], "temperature": 5},
    {"messages": [{"role": "user", "content": "x"}], "session_id": "../etc"},
    {"messages": [{"role": "user", "content": "x"}], "tts_mode": "loud"},
    {"messages": [{"role": "user", "content": "x"}], "unknown": 1},
    {"messages": "hello"},
])
def test_bad_chat_requests_are_4xx_in_the_envelope(client: TestClient, body: dict) -> None:
    response = client.post("/api/chat", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["success"] is False


def test_unknown_character_is_404(client: TestClient) -> None:
    response = client.post("/api/chat", json={"character_id": "missing",
                                              "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404


def test_ending_a_session_deletes_it(settings_env, client: TestClient) -> None:
    with serve(_recording_upstream([])) as url:
        settings_env(LLM_BASE_URL=url)
        sid = client.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]}
                          ).json()["data"]["session_id"]
    assert client.delete(f"/api/chat/sessions/{sid}").json()["data"]["ended"] is True
    assert client.get(f"/api/chat/sessions/{sid}").status_code == 404


@pytest.mark.llm
def test_multi_turn_conversation_on_the_real_llm(real_llm, client: TestClient) -> None:
    first = client.post("/api/chat", json={
        "messages": [{"role": "user", "content": "Hi! What is your name?"}],
        "persona": "You are Mia, a cheerful barista.", "max_tokens": 24}).json()
    assert first["success"] is True, first
    sid = first["data"]["session_id"]
    assert first["data"]["content"].strip()
    assert first["data"]["usage"]["prompt_tokens"] > 0
    second = client.post("/api/chat", json={
        "session_id": sid, "max_tokens": 24,
        "messages": [{"role": "user", "content": "What do you sell?"}]}).json()
    assert second["success"] is True, second
    session = _session(client, sid)
    assert [m["role"] for m in session["messages"]] == ["user", "assistant", "user", "assistant"]


@pytest.mark.llm
def test_streamed_reply_on_the_real_llm(real_llm, client: TestClient) -> None:
    with client.stream("POST", "/api/chat", json={
            "stream": True, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Tell me a joke."}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = sse_events(text)
    deltas = [data["content"] for name, data in events if name == "delta"]
    assert len(deltas) > 1
    name, done = events[-1]
    assert name == "done"
    assert done["usage"]["completion_tokens"] > 0
    assert done["context_summarized"] is False
    stored = _session(client, done["session_id"])["messages"]
    assert stored[-1]["role"] == "assistant" and stored[-1]["content"] == "".join(deltas)
    assert not stored[-1].get("cut")


@pytest.mark.llm
def test_reply_for_a_stored_character_on_the_real_llm(real_llm, client: TestClient) -> None:
    character = client.post("/api/characters", json={
        "name": "Mia", "persona": "A cheerful barista in Seoul.",
        "scenario": {"situation": "A quiet morning at the cafe", "opponent": "a regular"},
    }).json()["data"]
    opening = client.post("/api/chat", json={"character_id": character["id"], "max_tokens": 24})
    assert opening.status_code == 200, opening.text
    sid = opening.json()["data"]["session_id"]
    assert opening.json()["data"]["content"].strip(), "generated: the character has no greeting"
    reply = client.post("/api/chat", json={
        "session_id": sid, "max_tokens": 24,
        "messages": [{"role": "user", "content": "One latte, please."}]})
    assert reply.status_code == 200, reply.text
    assert [m["role"] for m in _session(client, sid)["messages"]] == [
        "assistant", "user", "assistant"]

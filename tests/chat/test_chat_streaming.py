"""Streaming edge cases and the Ollama dialect, on recorded upstream answers."""

import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from tests.support.sse import sse_events
from tests.support.upstream_server import serve

OLLAMA_REPLY = {
    "model": "gemma3:27b", "created_at": "2025-10-17T23:14:07.414671Z",
    "message": {"role": "assistant", "content": "안녕! 반가워."}, "done": True,
    "done_reason": "stop", "total_duration": 174560334, "load_duration": 101397084,
    "prompt_eval_count": 26, "prompt_eval_duration": 19000000, "eval_count": 7,
    "eval_duration": 52000000,
}
OLLAMA_STREAM = [
    {"model": "gemma3:27b", "created_at": "2025-10-17T23:14:07.4Z",
     "message": {"role": "assistant", "content": "안녕"}, "done": False},
    {"model": "gemma3:27b", "created_at": "2025-10-17T23:14:07.5Z",
     "message": {"role": "assistant", "content": "! 반가워."}, "done": False},
    {"model": "gemma3:27b", "created_at": "2025-10-17T23:14:07.6Z",
     "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
     "total_duration": 174560334, "prompt_eval_count": 26, "eval_count": 7},
]


def _ollama(seen: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.post("/api/chat")
    async def chat(request: Request):  # type: ignore[no-untyped-def]
        body = await request.json()
        seen.append(body)
        if not body["stream"]:
            return OLLAMA_REPLY
        lines = "".join(json.dumps(line) + "\n" for line in OLLAMA_STREAM)
        return StreamingResponse(iter([lines]), media_type="application/x-ndjson")

    return app


def test_ollama_reply_uses_its_counts_and_num_predict(settings_env, client: TestClient) -> None:
    seen: list[dict] = []
    with serve(_ollama(seen)) as url:
        settings_env(LLM_BASE_URL=url, LLM_SERVICE="ollama", DEFAULT_MODEL="gemma3:27b")
        data = client.post("/api/chat", json={"messages": [{"role": "user", "content": "안녕"}],
                                              "max_tokens": 64}).json()["data"]
    assert data["content"] == "안녕! 반가워."
    assert data["usage"] == {"prompt_tokens": 26, "completion_tokens": 7, "estimated": False}
    assert seen[0]["options"] == {"temperature": 0.7, "num_predict": 64, "num_ctx": 4096}
    assert seen[0]["keep_alive"] == "30m" and seen[0]["truncate"] is False
    assert seen[0]["model"] == "gemma3:27b" and seen[0]["stream"] is False


def test_ollama_ndjson_stream_becomes_sse(settings_env, client: TestClient) -> None:
    with serve(_ollama([])) as url:
        settings_env(LLM_BASE_URL=url, LLM_SERVICE="ollama")
        text = client.post("/api/chat", json={
            "stream": True, "messages": [{"role": "user", "content": "안녕"}]}).text
    events = sse_events(text)
    assert [e for e in events if e[0] == "delta"] == [("delta", {"content": "안녕"}),
                                                       ("delta", {"content": "! 반가워."})]
    assert events[-1][0] == "done"
    assert events[-1][1]["usage"] == {"prompt_tokens": 26, "completion_tokens": 7, "estimated": False}


def _slow_openai(state: dict) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete():  # type: ignore[no-untyped-def]
        async def events():  # type: ignore[no-untyped-def]
            try:
                for n in range(200):
                    chunk = {"choices": [{"delta": {"content": f"w{n} "}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    await asyncio.sleep(0.05)
                yield "data: [DONE]\n\n"
            finally:
                state["upstream_closed"] = True

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.mark.parametrize("speech", [{"tts_enabled": False},
                                    {"tts_enabled": True, "tts_streaming_mode": 3}])
def test_disconnect_mid_stream_stops_upstream_and_stores_the_cut_reply(
        settings_env, speech: dict) -> None:
    """With speech on, the client leaves while the relay waits for both the next delta and
    the next sentence's audio (its first piece, "w0 w1 w2", is already spoken)."""
    from local_runner.app import build_app

    state: dict = {}
    with serve(_slow_openai(state)) as upstream:
        settings_env(LLM_BASE_URL=upstream)
        with serve(build_app()) as api:
            with httpx.stream("POST", f"{api}/api/chat", json={
                    "session_id": "s-cut", "stream": True, **speech,
                    "messages": [{"role": "user", "content": "talk"}]}) as response:
                received = ""
                for text in response.iter_text():
                    received += text
                    if received.count("event: delta") >= 3 and (
                            not speech["tts_enabled"] or "event: audio" in received):
                        break
            deadline = time.monotonic() + 5
            while "upstream_closed" not in state and time.monotonic() < deadline:
                time.sleep(0.05)
            session = httpx.get(f"{api}/api/chat/sessions/s-cut").json()["data"]
    assert state.get("upstream_closed") is True
    last = session["messages"][-1]
    assert last["role"] == "assistant" and last["cut"] is True
    assert last["content"].startswith("w0 w1 w2")
    assert len(last["content"].split()) < 200


def test_upstream_error_mid_stream_ends_with_an_error_event(settings_env,
                                                            client: TestClient) -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete():  # type: ignore[no-untyped-def]
        chunk = {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: {{\"error\": {{\"message\": \"OOM\"}}}}\n\n"
        return StreamingResponse(iter([body]), media_type="text/event-stream")

    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        text = client.post("/api/chat", json={"session_id": "s-err", "stream": True,
                                              "messages": [{"role": "user", "content": "x"}]}).text
        events = sse_events(text)
        assert events[0] == ("delta", {"content": "Hel"})
        assert events[-1][0] == "error" and "OOM" in events[-1][1]["message"]
        stored = client.get("/api/chat/sessions/s-err").json()["data"]["messages"]
    assert stored[-1]["content"] == "Hel" and stored[-1]["cut"] is True


def test_stream_to_an_unreachable_upstream_is_a_plain_502(settings_env,
                                                          client: TestClient) -> None:
    from tests.support.upstream_server import closed_port_url

    settings_env(LLM_BASE_URL=closed_port_url())
    response = client.post("/api/chat", json={"stream": True,
                                              "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"

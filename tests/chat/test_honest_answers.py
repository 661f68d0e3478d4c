"""A reply says what really happened: the whole text in `done`, the upstream's own counts
(or `estimated`), and the model that answered as the upstream names it.

The stand-in streams as vLLM's OpenAI server does (vllm/entrypoints/openai/serving_chat.py):
every chunk names the served model, and with `stream_options.include_usage` a last chunk
with empty `choices` carries `usage`; without it, no usage at all.
"""

import json
from collections.abc import Callable

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from tests.support.sse import sse_events
from tests.support.upstream_server import serve

SERVED = "google/gemma-3-27b-it"
WORDS = ["Hello", " there", ", friend", "."]


def _vllm(send_usage: bool) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request):  # type: ignore[no-untyped-def]
        body = await request.json()
        usage = {"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36}
        if not body["stream"]:
            return {"id": "c1", "object": "chat.completion", "model": SERVED,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                                 "finish_reason": "stop"}],
                    **({"usage": usage} if send_usage else {})}

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": SERVED,
                                          "choices": [{"index": 0, "delta": delta,
                                                       "finish_reason": finish}]}) + "\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": word}) for word in WORDS]
        events.append(chunk({}, "stop"))
        if send_usage and body.get("stream_options", {}).get("include_usage"):
            events.append("data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk",
                                                 "model": SERVED, "choices": [], "usage": usage}) + "\n\n")
        events.append("data: [DONE]\n\n")
        return StreamingResponse(iter(events), media_type="text/event-stream")

    return app


TURN = {"model": "gemma-3-27b-it", "tts_enabled": False,
        "messages": [{"role": "user", "content": "Hi!"}]}


@pytest.mark.parametrize("stream", [True, False])
def test_reply_names_the_model_that_answered_and_its_own_counts(
        settings_env: Callable[..., None], client: TestClient, stream: bool) -> None:
    with serve(_vllm(send_usage=True)) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/api/chat", json={**TURN, "stream": stream})
    reply = sse_events(response.text)[-1][1] if stream else response.json()["data"]
    assert reply["model"] == SERVED
    assert reply["usage"] == {"prompt_tokens": 31, "completion_tokens": 5, "estimated": False}
    assert reply["content"] == "Hello there, friend."


def test_streamed_done_carries_the_whole_reply(settings_env: Callable[..., None],
                                               client: TestClient) -> None:
    with serve(_vllm(send_usage=True)) as url:
        settings_env(LLM_BASE_URL=url)
        events = sse_events(client.post("/api/chat", json={**TURN, "stream": True}).text)
    deltas = "".join(data["content"] for name, data in events if name == "delta")
    assert events[-1][0] == "done"
    assert events[-1][1]["content"] == deltas == "Hello there, friend."


@pytest.mark.parametrize("stream", [True, False])
def test_counts_the_upstream_did_not_give_are_marked_estimated(
        settings_env: Callable[..., None], client: TestClient, stream: bool) -> None:
    with serve(_vllm(send_usage=False)) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/api/chat", json={**TURN, "stream": stream})
    reply = sse_events(response.text)[-1][1] if stream else response.json()["data"]
    assert reply["usage"]["estimated"] is True
    assert reply["usage"]["prompt_tokens"] > 0 and reply["usage"]["completion_tokens"] > 0


@pytest.mark.llm
def test_llama_cpp_counts_a_whole_reply_but_not_a_streamed_one(real_llm: object,
                                                                client: TestClient) -> None:
    """llama-cpp-python's server (0.3.x) ignores `stream_options.include_usage`: streamed
    usage is Server B's estimate, and says so."""
    turn = {"tts_enabled": False, "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]}
    whole = client.post("/api/chat", json=turn).json()["data"]
    assert whole["usage"]["estimated"] is False
    events = sse_events(client.post("/api/chat", json={**turn, "stream": True}).text)
    done = events[-1][1]
    assert done["usage"]["estimated"] is True
    assert done["content"] == "".join(d["content"] for name, d in events if name == "delta")
    # It names the model with whatever name it was asked for; vLLM names its served model.
    assert whole["model"] == done["model"] == real_llm.model_alias  # type: ignore[attr-defined]

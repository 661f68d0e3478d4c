"""Server B against stand-ins that behave like vLLM and Ollama at the context limit
(tests/support/vllm_standin.py, tests/support/ollama_standin.py, each citing the upstream source it mirrors),
served over real HTTP, and the health probes against the same."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from roleplay.chat import token_ratio
from roleplay.chat.summarizer import _INSTRUCTIONS
from roleplay.llm.client import ChatMessage, CompletionRequest, ContextOverflow, context_overflow, llm_client
from tests.support.ollama_standin import OllamaStandin
from tests.support.upstream_server import serve
from tests.support.vllm_standin import VllmStandin

MAX_TOKENS = 64

AdminHealth = Callable[[], dict[str, Any]]
"""`GET /api/health` as an admin (tests/conftest.py): only an admin sees targets and errors."""


def _line(n: int) -> str:
    return (f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. "
            f"12시 34분, 영수증 번호 5678-9012. 너는 어때?")


def _turn(client: TestClient, sid: str, text: str, **extra: object) -> dict:
    response = client.post("/api/chat", json={"session_id": sid, "max_tokens": MAX_TOKENS,
                                              "messages": [{"role": "user", "content": text}],
                                              **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.fixture
def vllm(settings_env: Callable[..., None]) -> Iterator[VllmStandin]:
    standin = VllmStandin(model=f"gemma-{uuid.uuid4().hex[:6]}", max_model_len=1024)
    with serve(standin.app()) as url:
        settings_env(LLM_BASE_URL=url + "/v1", LLM_SERVICE="vllm", DEFAULT_MODEL=standin.model,
                     MAX_CONTEXT_TOKENS="4096", RECENT_TURNS_TO_KEEP="4",
                     SUMMARY_RETRY_AFTER_S="0", SUMMARY_MAX_TOKENS="200")
        yield standin


@pytest.fixture
def ollama(settings_env: Callable[..., None]) -> Iterator[OllamaStandin]:
    standin = OllamaStandin(model=f"gemma3-{uuid.uuid4().hex[:6]}:27b")
    with serve(standin.app()) as url:
        settings_env(LLM_BASE_URL=url, LLM_SERVICE="ollama", DEFAULT_MODEL=standin.model,
                     MAX_CONTEXT_TOKENS="1024", RECENT_TURNS_TO_KEEP="4",
                     SUMMARY_RETRY_AFTER_S="0", SUMMARY_MAX_TOKENS="200")
        yield standin


def test_vllm_limit_clamps_the_budget_and_no_turn_is_refused(
        vllm: VllmStandin, client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "roleplay.llm.upstream_limits")
    for n in range(30):
        _turn(client, "s-vllm", _line(n) + " 그리고" * (n % 5))
    assert vllm.rejected == [], "every prompt fitted max_model_len, none was refused"
    assert all(tokens + MAX_TOKENS <= 1024 for tokens in vllm.accepted)
    assert max(vllm.accepted) > 1024 // 2, "MAX_CONTEXT_TOKENS=4096 was clamped to 1024, not less"
    clamps = [r for r in caplog.records if "MAX_CONTEXT_TOKENS=4096" in r.getMessage()]
    assert len(clamps) == 1, "the clamp is logged once"
    chats = [r for r in vllm.requests if r["messages"][0]["content"] not in _INSTRUCTIONS.values()]
    assert 0 < vllm.tokenize_calls < len(chats), "exact counts only at the edge"
    view = client.get("/api/chat/sessions/s-vllm").json()["data"]
    assert view["tokens"]["max_context"] == 1024, "the session shows the context it is planned in"


def test_vllm_refusal_is_replanned_with_its_count_and_retried_once(
        vllm: VllmStandin, client: TestClient, sync_redis: redis.Redis, key_prefix: str,
        settings_env: Callable[..., None]) -> None:
    settings_env(SUMMARY_THRESHOLD="1.0")
    vllm.tokenize_route = False  # no exact count: only the refusal can tell
    for n in range(11):
        _turn(client, "s-retry", _line(n))
    sync_redis.hset(f"{key_prefix}token-ratios", vllm.model, "0.5")
    token_ratio._cache.clear()
    reply = _turn(client, "s-retry", "긴 이야기: " + "비가 오는 날의 카페는 조용했다. " * 12)
    assert len(vllm.rejected) == 1, "refused once"
    assert vllm.accepted[-1] + MAX_TOKENS <= 1024, "...and the retry fitted"
    assert reply["dropped_messages"] > 0 and reply["usage"]["prompt_tokens"] == vllm.accepted[-1]
    assert float(sync_redis.hget(f"{key_prefix}token-ratios", vllm.model)) > 0.5, "ratio corrected"


def test_vllm_refusal_during_a_stream_is_retried_before_the_first_byte(
        vllm: VllmStandin, client: TestClient, sync_redis: redis.Redis, key_prefix: str,
        settings_env: Callable[..., None]) -> None:
    settings_env(SUMMARY_THRESHOLD="1.0")
    vllm.tokenize_route = False
    for n in range(11):
        _turn(client, "s-stream", _line(n))
    sync_redis.hset(f"{key_prefix}token-ratios", vllm.model, "0.5")
    token_ratio._cache.clear()
    response = client.post("/api/chat", json={
        "session_id": "s-stream", "max_tokens": MAX_TOKENS, "stream": True,
        "messages": [{"role": "user", "content": "긴 이야기: " + "비가 오는 날. " * 30}]})
    assert response.status_code == 200 and "event: done" in response.text, response.text
    assert len(vllm.rejected) == 1 and vllm.accepted[-1] + MAX_TOKENS <= 1024


def test_vllm_limit_holds_for_regenerate_and_continue_as_for_a_turn(
        vllm: VllmStandin, client: TestClient, sync_redis: redis.Redis, key_prefix: str,
        settings_env: Callable[..., None]) -> None:
    """Regenerate and continue plan their prompt as a chat turn does: against the clamped
    context (not MAX_CONTEXT_TOKENS=4096) with room for their reply, and a refusal (here
    from a learned ratio that is far too low) is planned again and resent."""
    settings_env(SUMMARY_THRESHOLD="1.0")
    vllm.tokenize_route = False
    for n in range(12):
        _turn(client, "s-control", _line(n))
    reply_tokens = 700
    for action, stream in (("regenerate", False), ("continue", False), ("regenerate", True),
                           ("continue", True)):
        sync_redis.hset(f"{key_prefix}token-ratios", vllm.model, "0.5")
        token_ratio._cache.clear()
        rejected = len(vllm.rejected)
        response = client.post(f"/api/chat/sessions/s-control/{action}",
                               json={"max_tokens": reply_tokens, "stream": stream,
                                     "tts_enabled": False})
        assert response.status_code == 200, (action, stream, response.text)
        if stream:
            done = response.text.split("event: done\ndata: ", 1)[1].split("\n", 1)[0]
            usage = json.loads(done)["usage"]
        else:
            usage = response.json()["data"]["usage"]
        assert usage["prompt_tokens"] + reply_tokens <= 1024, (action, stream, usage)
        assert len(vllm.rejected) <= rejected + 1, "refused once at most, then resent"
    assert vllm.rejected, "the ratio of 0.5 was refused, and the turn was planned again"


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_refusal_of_an_openai_api_session_turn_is_replanned_and_retried(
        vllm: VllmStandin, client: TestClient, sync_redis: redis.Redis, key_prefix: str,
        settings_env: Callable[..., None], stream: bool) -> None:
    """/v1/chat/completions with a session (the client re-sends its history) plans and
    retries like /api/chat: the OpenAI SDK's caller never sees a 502 for a prompt that fits."""
    settings_env(SUMMARY_THRESHOLD="1.0")
    vllm.tokenize_route = False
    history: list[dict[str, str]] = []
    session = f"v1-edge-{stream}"

    def send(text: str, **more: object) -> httpx.Response:
        history.append({"role": "user", "content": text})
        return client.post("/v1/chat/completions", headers={"X-Session-Id": session},
                           json={"model": vllm.model, "max_tokens": MAX_TOKENS,
                                 "messages": history, **more})

    for n in range(11):
        response = send(_line(n))
        assert response.status_code == 200, response.text
        history.append({"role": "assistant", "content": vllm.reply})
    sync_redis.hset(f"{key_prefix}token-ratios", vllm.model, "0.5")
    token_ratio._cache.clear()
    response = send("긴 이야기: " + "비가 오는 날의 카페는 조용했다. " * 12, stream=stream)
    assert response.status_code == 200, response.text
    assert response.text.endswith("data: [DONE]\n\n") if stream else response.json()["choices"]
    assert len(vllm.rejected) == 1, "refused once"
    assert vllm.accepted[-1] + MAX_TOKENS <= 1024, "...and the retry fitted"


def test_a_message_that_cannot_fit_even_alone_is_a_4xx_not_a_502(vllm: VllmStandin,
                                                                 client: TestClient) -> None:
    response = client.post("/api/chat", json={
        "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "가나다라 " * 400}]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "message_too_long"


def test_ollama_is_sent_num_ctx_keep_alive_and_truncate_off_and_cuts_nothing(
        ollama: OllamaStandin, client: TestClient) -> None:
    for n in range(24):
        _turn(client, "s-ollama", _line(n) + " 그리고" * (n % 5))
    summaries = [c for c in ollama.chats if c.body["messages"][0]["content"] in _INSTRUCTIONS.values()]
    assert summaries, "summaries ran too"
    for chat in ollama.chats:
        assert chat.body["options"]["num_ctx"] == 1024, "one constant num_ctx: no model reload"
        assert chat.body["keep_alive"] == "30m"
        assert chat.body["truncate"] is False and chat.body["shift"] is False
    served = [c for c in ollama.chats if c.prompt_eval_count is not None]
    assert served and all(c.kept_messages == c.sent_messages for c in served), "nothing cut"
    assert all(c.prompt_eval_count is not None and c.prompt_eval_count + MAX_TOKENS <= 1024
               for c in served if c not in summaries)


def test_ollama_keep_alive_is_configurable(ollama: OllamaStandin, client: TestClient,
                                           settings_env: Callable[..., None]) -> None:
    settings_env(OLLAMA_KEEP_ALIVE="-1")
    _turn(client, "s-keep", "안녕")
    assert ollama.chats[-1].body["keep_alive"] == -1.0


def test_ollama_refusal_is_replanned_and_retried(
        ollama: OllamaStandin, client: TestClient, sync_redis: redis.Redis, key_prefix: str,
        settings_env: Callable[..., None]) -> None:
    settings_env(SUMMARY_THRESHOLD="1.0", OLLAMA_SAFETY_MARGIN="0")
    for n in range(11):
        _turn(client, "s-oretry", _line(n))
    sync_redis.hset(f"{key_prefix}token-ratios", ollama.model, "0.5")
    token_ratio._cache.clear()
    reply = _turn(client, "s-oretry", "긴 이야기: " + "비가 오는 날의 카페는 조용했다. " * 12)
    refused = [c for c in ollama.chats if c.prompt_eval_count is None]
    assert len(refused) == 1 and ollama.chats[-1].prompt_eval_count is not None
    assert reply["dropped_messages"] > 0
    assert ollama.chats[-1].kept_messages == ollama.chats[-1].sent_messages


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_our_ollama_client_gets_a_refusal_not_a_silent_cut_for_a_prompt_over_num_ctx(
        ollama: OllamaStandin, stream: bool) -> None:
    """Ollama's default (server/prompt.go) drops the oldest messages of a prompt longer than
    num_ctx without a word; our client turns that off, so it hears of it as a
    ContextOverflow (which the turn plans again from) and never answers from a cut prompt."""
    messages = [ChatMessage("system", "persona")] + [
        ChatMessage("user" if n % 2 == 0 else "assistant", _line(n)) for n in range(9)]
    as_sent = [dict(m) for m in messages]
    assert ollama.chat_prompt(as_sent, 256, truncate=True)[0] > 0, "Ollama would cut this one"
    request = CompletionRequest(model=ollama.model, messages=messages, context_tokens=256)

    async def send() -> None:
        if stream:
            async for _ in llm_client().stream(request):
                pass
        else:
            await llm_client().complete(request)

    with pytest.raises(ContextOverflow) as refused:
        asyncio.run(send())
    assert refused.value.limit == 256 and refused.value.prompt_tokens is not None
    assert refused.value.prompt_tokens > 256
    [chat] = ollama.chats
    assert chat.body["truncate"] is False and chat.body["options"]["num_ctx"] == 256
    assert chat.kept_messages == chat.sent_messages == len(messages) and chat.prompt_eval_count is None


def test_ollama_models_report_context_and_vision_from_api_show(
        ollama: OllamaStandin, client: TestClient, settings_env: Callable[..., None]) -> None:
    [model] = client.get("/api/chat/models").json()["data"]["models"]
    assert model["context_length"] == 1024, "the num_ctx Server B runs it with"
    assert model["details"]["model_context_length"] == 131072
    assert model["multimodal"] is True
    settings_env(MAX_CONTEXT_TOKENS="200000")
    [model] = client.get("/api/chat/models").json()["data"]["models"]
    assert model["context_length"] == 131072


def test_models_report_the_runner_context_for_llama_cpp_python(
        settings_env: Callable[..., None], client: TestClient) -> None:
    app = FastAPI()
    app.get("/v1/models")(lambda: {"object": "list", "data": [
        {"id": "smollm2-135m-instruct", "object": "model", "owned_by": "me", "permissions": []}]})
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url, LLM_CONTEXT_LENGTH="4096")
        [model] = client.get("/api/chat/models").json()["data"]["models"]
    assert model["context_length"] == 4096, "what it runs with, not the model's 8192"


@pytest.mark.parametrize(("message", "limit", "count"), [
    ("This model's maximum context length is 1024 tokens. However, your request has 1100 "
     "input tokens. Please reduce the length of the input messages.", 1024, 1100),
    ("'max_tokens' or 'max_completion_tokens' is too large: 64. This model's maximum context "
     "length is 1024 tokens and your request has 1000 input tokens (64 > 1024 - 1000).",
     1024, 1000),
    ("This model's maximum context length is 1024 tokens. However, you requested 1090 tokens "
     "(1026 in the messages, 64 in the completion). Please reduce the length of the messages "
     "or completion.", 1024, 1026),
    ('{"error":{"message":"request (302 tokens) exceeds the available context size '
     '(256 tokens), try increasing it"}}', 256, 302),
    ("the prompt is longer than the context length currently available to the model; shorten "
     "the prompt, adjust the context length in settings, or use a model with a longer context "
     "length", None, None),
])
def test_context_refusals_are_read_with_their_numbers(message: str, limit: int | None,
                                                      count: int | None) -> None:
    overflow = context_overflow(400, message, "LLM")
    assert overflow is not None and (overflow.limit, overflow.prompt_tokens) == (limit, count)
    assert context_overflow(400, "Conversation roles must alternate", "LLM") is None
    assert context_overflow(500, message, "LLM") is None


def test_health_is_down_for_a_vllm_whose_health_is_503(vllm: VllmStandin,
                                                       client: TestClient,
        admin_health: AdminHealth) -> None:
    assert admin_health()["data"]["checks"]["llm"]["status"] == "ok"
    vllm.engine_dead = True
    data = admin_health()["data"]
    assert data["checks"]["llm"]["status"] == "down" and "503" in data["checks"]["llm"]["error"]
    assert data["status"] == "degraded"


def test_health_is_down_when_ollama_lacks_the_model(ollama: OllamaStandin, client: TestClient,
                                                    settings_env: Callable[..., None],
        admin_health: AdminHealth) -> None:
    assert admin_health()["data"]["checks"]["llm"]["status"] == "ok"
    settings_env(DEFAULT_MODEL="llama3:8b")
    llm = admin_health()["data"]["checks"]["llm"]
    assert llm["status"] == "down" and "llama3:8b" in llm["error"]


def test_health_probes_the_ollama_url_the_client_uses(ollama: OllamaStandin, client: TestClient,
                                                      settings_env: Callable[..., None]) -> None:
    with serve(ollama.app()) as url:
        settings_env(LLM_BASE_URL=url + "/v1")
        assert client.get("/api/health").json()["data"]["checks"]["llm"]["status"] == "ok"
        assert _turn(client, "s-v1", "안녕")["content"], "...and chat works at that URL too"


def test_health_is_down_for_a_tts_that_answers_404(settings_env: Callable[..., None],
                                                   client: TestClient,
        admin_health: AdminHealth) -> None:
    with serve(FastAPI()) as url:
        settings_env(TTS_BASE_URL=url)
        tts = admin_health()["data"]["checks"]["tts"]
    assert tts["status"] == "down" and "404" in tts["error"]


def test_health_is_ok_for_gpt_sovits_control_without_a_command(
        settings_env: Callable[..., None], client: TestClient,
        admin_health: AdminHealth) -> None:
    app = FastAPI()
    app.get("/control")(lambda: JSONResponse({"message": "command is required"}, 400))
    with serve(app) as url:
        settings_env(TTS_BASE_URL=url)
        assert client.get("/api/health").json()["data"]["checks"]["tts"]["status"] == "ok"


@pytest.mark.llm
@pytest.mark.timeout(1200)
def test_forty_turns_on_the_real_llm_never_exceed_the_budget_as_llama_cpp_counts(
        real_llm: object, settings_env: Callable[..., None], client: TestClient) -> None:
    """The issue's session: MAX_CONTEXT_TOKENS=1024 against the embedded llama.cpp, which
    reports every prompt's size in its own tokens (usage.prompt_tokens)."""
    settings_env(MAX_CONTEXT_TOKENS="1024", RECENT_TURNS_TO_KEEP="4", SUMMARY_MAX_TOKENS="96",
                 SUMMARY_LANGUAGE="en", PERSONA_LANGUAGE="en")
    character = client.post("/api/characters", json={
        "name": "Mia", "persona": "A cheerful barista in Seoul who loves rainy days."}).json()
    sid, prompts = None, []
    for n in range(40):
        text = (f"Turn {n}: my name is Alex, 오늘은 카페에서 라떼를 마셨어. I love rainy days "
                f"and jazz. Tell me about your cafe, your favourite coffee and your day. "
                + "그리고 " * (n % 6))
        body: dict = {"character_id": character["data"]["id"], "max_tokens": 48,
                      "messages": [{"role": "user", "content": text}]}
        if sid:
            body["session_id"] = sid
        response = client.post("/api/chat", json=body)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        sid = data["session_id"]
        prompts.append(data["usage"]["prompt_tokens"])
    assert all(p + 48 <= 1024 for p in prompts), prompts
    assert max(prompts) > 1024 // 2, "the context was used, not wasted"

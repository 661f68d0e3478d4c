"""Faults of the parts Server B stands on: Redis restarting, the LLM and GPT-SoVITS down,
hanging or answering garbage. Each must be a clear error in the envelope, promptly, and
must lose nothing already stored.

Redis here is a real `redis-server` process of the test's own, so it can be stopped
and started again; the upstreams are small real HTTP servers (tests/support/upstream_server.py).

Checked elsewhere and not repeated: Redis unreachable from the start (test_health.py,
test_users_api.py::test_redis_down_is_503_and_nobody_is_admitted), an error event
mid-stream (test_chat_streaming.py::test_upstream_error_mid_stream_ends_with_an_error_event),
GPT-SoVITS down or refusing (test_tts_api.py::test_gpt_sovits_down_is_a_502,
::test_gpt_sovits_refusing_is_a_502_with_its_message, ::test_tts_down_never_fails_the_chat,
::test_streamed_chat_with_tts_down_reports_per_sentence_errors). The bare status of an
LLM down or hanging on a first turn is in test_chat.py too; the table here adds what
those leave out: earlier turns that must survive, streamed turns, and garbage answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.testclient import TestClient

from roleplay.core.settings import get_settings
from tests.support.fake_llm import FakeLLM
from tests.support.real_redis import RedisServer
from tests.support.sse import sse_events
from tests.support.upstream_server import closed_port_url, serve, silent_socket

PROMPT_S = 2.0
"""An outage answer slower than this would hold the user (and a Lambda) waiting."""


@pytest.fixture
def private_redis(settings_env: Callable[..., None], tmp_path: Path) -> Iterator[RedisServer]:
    """The test's own Redis as REDIS_URL, stopped at the end whatever happened."""
    server = RedisServer(tmp_path / "redis", append_only=True)
    server.start()
    settings_env(REDIS_URL=server.url)
    try:
        yield server
    finally:
        server.stop()


def _say(client: TestClient, session_id: str, text: str, **extra: Any) -> Any:
    return client.post("/api/chat", json={"session_id": session_id, "tts_enabled": False,
                                          "messages": [{"role": "user", "content": text}], **extra})


def _transcript(client: TestClient, session_id: str) -> list[tuple[str, str]]:
    response = client.get(f"/api/chat/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"]) for m in response.json()["data"]["messages"]]


def _assert_envelope(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and set(body) == {"success", "error"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "details", "request_id"}


# --- Redis restarted mid-conversation -----------------------------------------------------


def test_a_redis_restart_mid_conversation_is_a_prompt_503_then_resumes_with_nothing_lost(
        private_redis: RedisServer, fake_upstream: FakeLLM) -> None:
    from local_runner.app import build_app

    with TestClient(build_app(), raise_server_exceptions=False) as client:
        for n in range(3):
            fake_upstream.reply = f"reply {n}"
            assert _say(client, "s-restart", f"message {n}").status_code == 200
        before = _transcript(client, "s-restart")
        prompts = len(fake_upstream.chat_prompts)

        private_redis.stop()
        for attempt in (lambda: _say(client, "s-restart", "while down"),
                        lambda: _say(client, "s-restart", "while down", stream=True),
                        lambda: client.get("/api/chat/sessions/s-restart")):
            started = time.monotonic()
            response = attempt()
            assert time.monotonic() - started < PROMPT_S
            _assert_envelope(response, 503, "redis_unavailable")
            assert response.headers["Retry-After"]
        assert len(fake_upstream.chat_prompts) == prompts, "nobody was admitted to the LLM"

        private_redis.start()
        fake_upstream.reply = "reply 3"
        resumed = _say(client, "s-restart", "message 3")
        assert resumed.status_code == 200, "the same app reconnects by itself: " + resumed.text
        assert _transcript(client, "s-restart") == [
            *before, ("user", "message 3"), ("assistant", "reply 3")]
        assert [(m["role"], m["content"]) for m in fake_upstream.chat_prompts[-1][1:]] == [
            *before, ("user", "message 3")], "the next prompt still carries the whole conversation"


# --- the LLM down, hanging or answering garbage ------------------------------------------------


def _answering(make: Callable[[], Response]) -> AbstractContextManager[str]:
    app = FastAPI()
    app.post("/v1/chat/completions")(make)
    return serve(app)


def _sse_body(*events: str) -> Callable[[], Response]:
    return lambda: StreamingResponse(iter([f"data: {event}\n\n" for event in events]),
                                     media_type="text/event-stream")


LLM_FAULTS: dict[str, tuple[Callable[[], AbstractContextManager[str]], int, str]] = {
    "down": (lambda: nullcontext(closed_port_url()), 502, "upstream_unavailable"),
    "hanging": (silent_socket, 504, "upstream_timeout"),
    "http_500_html": (lambda: _answering(lambda: PlainTextResponse(
        "<html><body>502 Bad Gateway</body></html>", 500)), 502, "upstream_error"),
    "not_json": (lambda: _answering(lambda: PlainTextResponse("I am not JSON")), 502, "upstream_error"),
    "wrong_shape": (lambda: _answering(lambda: JSONResponse({"result": "ok"})), 502, "upstream_error"),
    "wrong_types": (lambda: _answering(lambda: JSONResponse(
        {"choices": [{"message": {"content": 42}}], "usage": [1, 2]})), 502, "upstream_error"),
}

STREAM_FAULTS: dict[str, Callable[[], Response]] = {
    "unreadable_event": _sse_body("not json"),
    "event_not_an_object": _sse_body("[1, 2]"),
    "choices_not_a_list": _sse_body('{"choices": "nope"}'),
    "delta_not_text": _sse_body('{"choices": [{"delta": {"content": 42}}]}'),
}


def _llm_url() -> str:
    """The healthy upstream's URL, to come back to after a fault."""
    url = get_settings().llm_base_url
    assert url is not None
    return url


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("fault", list(LLM_FAULTS))
def test_an_llm_fault_is_a_clear_error_and_keeps_the_conversation(
        fake_upstream: FakeLLM, settings_env: Callable[..., None], client: TestClient,
        fault: str, stream: bool) -> None:
    """The earlier turns stay; the failed turn's user message stays too (it is stored
    before the LLM is asked, by design), with no reply, so a retry completes it once."""
    upstream, status, code = LLM_FAULTS[fault]
    settings_env(LLM_READ_TIMEOUT_S="0.5")
    healthy = _llm_url()
    assert _say(client, "s-fault", "before").status_code == 200
    with upstream() as url:
        settings_env(LLM_BASE_URL=url)
        started = time.monotonic()
        failed = _say(client, "s-fault", "during", stream=stream)
        assert time.monotonic() - started < PROMPT_S
    _assert_envelope(failed, status, code)
    assert _transcript(client, "s-fault") == [
        ("user", "before"), ("assistant", fake_upstream.reply), ("user", "during")]

    settings_env(LLM_BASE_URL=healthy)
    assert _say(client, "s-fault", "during", stream=stream).status_code == 200
    assert _transcript(client, "s-fault") == [
        ("user", "before"), ("assistant", fake_upstream.reply),
        ("user", "during"), ("assistant", fake_upstream.reply)]


@pytest.mark.parametrize("fault", list(STREAM_FAULTS))
def test_a_garbled_stream_is_a_502_before_any_event(
        fake_upstream: FakeLLM, settings_env: Callable[..., None], client: TestClient,
        fault: str) -> None:
    with _answering(STREAM_FAULTS[fault]) as url:
        settings_env(LLM_BASE_URL=url)
        failed = _say(client, "s-garbled", "hello", stream=True)
    _assert_envelope(failed, 502, "upstream_error")
    assert _transcript(client, "s-garbled") == [("user", "hello")]


def test_a_malformed_usage_is_ignored_and_the_reply_stands(
        settings_env: Callable[..., None], client: TestClient) -> None:
    """Usage is only bookkeeping: local estimates stand in, the user still gets the reply."""
    with _answering(lambda: JSONResponse({"choices": [{"message": {"content": "안녕!"}}],
                                          "usage": ["not", "counts"]})) as url:
        settings_env(LLM_BASE_URL=url)
        response = _say(client, "s-usage", "hello")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["content"] == "안녕!" and data["usage"]["prompt_tokens"] > 0
    assert _transcript(client, "s-usage") == [("user", "hello"), ("assistant", "안녕!")]

def test_an_llm_that_hangs_mid_stream_ends_with_a_timeout_event_and_keeps_the_part(
        settings_env: Callable[..., None], client: TestClient) -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> StreamingResponse:
        async def events() -> Any:
            yield 'data: {"choices": [{"delta": {"content": "반가"}}]}\n\n'
            await asyncio.sleep(30)

        return StreamingResponse(events(), media_type="text/event-stream")

    with serve(app) as url:
        settings_env(LLM_BASE_URL=url, LLM_READ_TIMEOUT_S="0.5")
        started = time.monotonic()
        response = _say(client, "s-hang", "hello", stream=True)
        elapsed = time.monotonic() - started
    assert response.status_code == 200 and elapsed < PROMPT_S
    events = sse_events(response.text)
    assert events[0] == ("delta", {"content": "반가"})
    assert events[-1][0] == "error" and events[-1][1]["code"] == "upstream_timeout"
    stored = client.get("/api/chat/sessions/s-hang").json()["data"]["messages"]
    assert [(m["role"], m["content"], m.get("cut")) for m in stored] == [
        ("user", "hello", None), ("assistant", "반가", True)]


# --- GPT-SoVITS hanging -----------------------------------------------------------------------


@pytest.fixture
def hanging_tts(settings_env: Callable[..., None], tmp_path: Path) -> Iterator[str]:
    """GPT-SoVITS that accepts and never answers, with a voice it could speak."""
    voices = tmp_path / "voices.json"
    voices.write_text(json.dumps({"voices": [
        {"id": "default", "name": "기본", "ref_audio_path": "/srv/voices/default.wav",
         "prompt_text": "안녕하세요.", "prompt_lang": "ko"}]}))
    with silent_socket() as url:
        settings_env(TTS_BASE_URL=url, VOICES_FILE=str(voices), TTS_READ_TIMEOUT_S="0.5")
        yield url


def test_tts_that_hangs_is_a_prompt_504(hanging_tts: str, client: TestClient) -> None:
    started = time.monotonic()
    response = client.post("/api/tts", json={"text": "안녕"})
    assert time.monotonic() - started < PROMPT_S
    _assert_envelope(response, 504, "upstream_timeout")


def test_a_chat_whose_speech_hangs_still_answers_and_stores_the_text(
        fake_upstream: FakeLLM, hanging_tts: str, client: TestClient) -> None:
    response = client.post("/api/chat", json={"session_id": "s-mute", "tts_mode": "realtime",
                                              "messages": [{"role": "user", "content": "안녕"}]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["content"] == fake_upstream.reply
    assert data["audio_url"] is None and data["tts_error"]["code"] == "upstream_timeout"
    assert _transcript(client, "s-mute") == [("user", "안녕"), ("assistant", fake_upstream.reply)]

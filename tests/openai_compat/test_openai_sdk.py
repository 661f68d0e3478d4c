"""OpenAI's API (`/v1`) driven by the official `openai` SDK, as any OpenAI client would.

Server B runs as the local runner in a real uvicorn process (tests/support/server_process.py)
on the suite's real Redis, with the real llama.cpp server and SmolLM2 as its upstream,
sign-in on (JWT) and one static API key. The SDK's own parser reads every answer and
stream; the transcript is checked on the server through `/api/chat/sessions/{id}`.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from roleplay.openai_compat.api_keys import digest
from tests.conftest import RUN_ID
from tests.support.server_process import ServedApp, server_b_process
from tests.support.sign_in import SECRET, bearer, mint

pytestmark = pytest.mark.llm

API_KEY = "sk-server-b-test-key"
KEY_USER = "tool-user"


def _env(redis_url: str, llm_server: object, folder: Path, **more: str) -> dict[str, str]:
    keys = folder / "api-keys.json"
    keys.write_text(json.dumps({digest(API_KEY): KEY_USER}))
    return {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"test-{RUN_ID}-oai{folder.name[-6:]}:",
            "LLM_BASE_URL": llm_server.base_url, "LLM_SERVICE": "vllm",  # type: ignore[attr-defined]
            "DEFAULT_MODEL": llm_server.model_alias,  # type: ignore[attr-defined]
            "JWT_SECRET": SECRET, "API_KEYS_FILE": str(keys), "AUDIO_DIR": str(folder / "audio"),
            "PERSONA_LANGUAGE": "en", "CHARACTERS_TABLE": "", "TTS_BASE_URL": "",
            "TTS_SERVICE": "", "VOICES_FILE": "", "JWT_SECRET_ARN": "", "API_KEYS_ARN": "",
            "MAX_TURNS": "0", **more}


@pytest.fixture(scope="module")
def server(redis_url: str, llm_server: object,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with server_b_process(_env(redis_url, llm_server, tmp_path_factory.mktemp("oai"))) as served:
        yield served


def _sdk(server: ServedApp, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=api_key, max_retries=0,
                         timeout=120)


@pytest.fixture(scope="module")
def character(server: ServedApp) -> dict:
    response = httpx.post(f"{server.base_url}/api/characters", headers=bearer("alice"), json={
        "name": "Mia", "persona": "A cheerful barista in Seoul who loves latte art.",
        "scenario": {"situation": "A quiet morning at the cafe"}})
    assert response.status_code == 201 or response.status_code == 200, response.text
    return response.json()["data"]


def _transcript(server: ServedApp, session_id: str, sub: str) -> list[tuple[str, str]]:
    response = httpx.get(f"{server.base_url}/api/chat/sessions/{session_id}",
                         headers=bearer(sub))
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"]) for m in response.json()["data"]["messages"]]


def test_models_list_has_the_upstreams_models_and_one_per_character(
        server: ServedApp, character: dict, llm_server: object) -> None:
    models = _sdk(server, mint({"sub": "alice"})).models.list()
    ids = [model.id for model in models]
    assert llm_server.model_alias in ids  # type: ignore[attr-defined]
    assert f"character/{character['id']}" in ids
    card = next(model for model in models if model.id == f"character/{character['id']}")
    assert card.object == "model"
    assert card.model_extra and card.model_extra["name"] == "Mia"


def test_two_turn_character_conversation_resends_the_history_without_duplicates(
        server: ServedApp, character: dict) -> None:
    client = _sdk(server, mint({"sub": "alice"}))
    model = f"character/{character['id']}"
    history: list[dict[str, str]] = [
        {"role": "system", "content": "Keep every answer short."},
        {"role": "user", "content": "Hi! What is your name?"}]
    first = client.chat.completions.with_raw_response.create(
        model=model, messages=history, max_tokens=16, user="alice-laptop")  # type: ignore[arg-type]
    session_id = first.headers["x-session-id"]
    reply = first.parse()
    assert reply.object == "chat.completion" and reply.model == model
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage and reply.usage.prompt_tokens > 0
    history += [{"role": "assistant", "content": reply.choices[0].message.content},
                {"role": "user", "content": "What do you sell?"}]

    second = client.chat.completions.with_raw_response.create(
        model=model, messages=history, max_tokens=16, user="alice-laptop")  # type: ignore[arg-type]
    assert second.headers["x-session-id"] == session_id, "the user field finds the session again"
    answer = second.parse().choices[0].message.content
    assert answer

    assert _transcript(server, session_id, "alice") == [
        ("user", "Hi! What is your name?"), ("assistant", reply.choices[0].message.content),
        ("user", "What do you sell?"), ("assistant", answer)], "no system message, no duplicate"


def _streamed(client: openai.OpenAI, **request: object) -> tuple[str, str, list[ChatCompletionChunk]]:
    with client.chat.completions.with_streaming_response.create(
            stream=True, stream_options={"include_usage": True}, **request) as raw:  # type: ignore[call-overload]
        session_id = raw.headers.get("x-session-id")
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return session_id, text, chunks


def test_streamed_two_turn_character_conversation_is_stored(
        server: ServedApp, character: dict) -> None:
    client = _sdk(server, API_KEY)
    model = f"character/{character['id']}"
    history = [{"role": "user", "content": "Good morning! Anything new today?"}]
    session_id, first, chunks = _streamed(client, model=model, messages=history,
                                          max_completion_tokens=16)
    assert session_id and first
    assert all(isinstance(c, ChatCompletionChunk) and c.object == "chat.completion.chunk"
               for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}
    assert not chunks[-1].choices and chunks[-1].usage and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])

    history += [{"role": "assistant", "content": first},
                {"role": "user", "content": "I'll take a latte."}]
    again, second, _ = _streamed(client, model=model, messages=history, max_tokens=16)
    assert again == session_id, "same first message, same caller: the same conversation"
    assert _transcript(server, session_id, KEY_USER) == [
        ("user", "Good morning! Anything new today?"), ("assistant", first),
        ("user", "I'll take a latte."), ("assistant", second)]


def test_stream_is_openais_format_line_by_line(server: ServedApp, llm_server: object) -> None:
    """Every event parses strictly as the SDK's ChatCompletionChunk, and [DONE] ends it;
    a plain model name passes through and keeps no session."""
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=120, headers={
            "Authorization": f"Bearer {API_KEY}"}, json={
            "model": llm_server.model_alias, "stream": True, "max_tokens": 8,  # type: ignore[attr-defined]
            "stream_options": {"include_usage": True}, "stop": ["\n\n"], "top_p": 0.9,
            "messages": [{"role": "user", "content": "Say hello."}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "x-session-id" not in response.headers
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(line.removeprefix("data: ")),
                                                 strict=True) for line in lines[:-1]]
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_speech_is_a_wav_in_the_characters_voice(server: ServedApp, character: dict) -> None:
    client = _sdk(server, API_KEY)
    audio = client.audio.speech.create(model="tts-1", voice=character["id"],  # type: ignore[arg-type]
                                       input="Your latte is ready!", response_format="wav")
    with wave.open(io.BytesIO(audio.content)) as reader:
        assert reader.getnframes() > reader.getframerate() // 4
    raw = client.audio.speech.create(model="tts-1", voice="default", input="Hello.",
                                     response_format="pcm")  # type: ignore[arg-type]
    assert len(raw.content) > 0 and len(raw.content) % 2 == 0


def test_sdk_raises_its_own_exceptions(server: ServedApp) -> None:
    client = _sdk(server, API_KEY)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="character/x", n=2,
                                       messages=[{"role": "user", "content": "hi"}])
    assert bad.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="default", input="Hi",
                                   response_format="mp3")
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="character/nobody",
                                       messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "character_not_found"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError) as denied:
        _sdk(server, "sk-not-ours").models.list()
    assert denied.value.body["type"] == "authentication_error"  # type: ignore[index]
    anonymous = httpx.get(f"{server.base_url}/v1/models")
    assert anonymous.status_code == 401
    assert set(anonymous.json()["error"]) == {"message", "type", "param", "code"}


def test_the_user_cap_is_a_503_with_retry_after(
        redis_url: str, llm_server: object, tmp_path: Path) -> None:
    with server_b_process(_env(redis_url, llm_server, tmp_path,
                               MAX_CONCURRENT_USERS="1")) as served:
        _sdk(served, mint({"sub": "first"})).chat.completions.create(
            model=llm_server.model_alias, max_tokens=2,  # type: ignore[attr-defined]
            messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError) as full:
            _sdk(served, mint({"sub": "second"})).chat.completions.create(
                model=llm_server.model_alias, max_tokens=2,  # type: ignore[attr-defined]
                messages=[{"role": "user", "content": "hi"}])
    assert full.value.status_code == 503
    assert int(full.value.response.headers["retry-after"]) >= 1
    assert full.value.body["code"] == "too_many_users"  # type: ignore[index]

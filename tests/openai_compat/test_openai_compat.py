"""The `/v1` domain on a scripted upstream: what reaches the LLM, what is stored, and the
error shape. The SDK against the real model is tests/openai_compat/test_openai_sdk.py."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from roleplay.core.identity import User
from roleplay.openai_compat.api_keys import digest
from roleplay.openai_compat.chat_completions import session_for
from roleplay.openai_compat.models import ChatCompletionRequest
from roleplay.openai_compat.speech import PCM_RATE, pcm_24k
from roleplay.speech.engine import pcm_to_wav
from tests.support.fake_llm import FakeLLM
from tests.support.recording_upstream import recording_upstream
from tests.support.sign_in import SECRET, bearer
from tests.support.upstream_server import serve


def _turn(client: TestClient, messages: list[dict], *, headers: dict[str, str] | None = None,
          **more: object):
    return client.post("/v1/chat/completions", json={"messages": messages, **more},
                       headers=headers or {})


def _stored(client: TestClient, session_id: str) -> list[tuple[str, str]]:
    data = client.get(f"/api/chat/sessions/{session_id}").json()["data"]
    return [(m["role"], m["content"]) for m in data["messages"]]


def test_plain_model_passes_the_callers_messages_and_knobs_through(settings_env,
                                                                   client: TestClient) -> None:
    seen: list[dict] = []
    messages = [{"role": "developer", "content": "Be terse."},
                {"role": "user", "content": [{"type": "text", "text": "ping"}]}]
    with serve(recording_upstream(seen, finish_reason="length")) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/v1/chat/completions", json={
            "model": "gemma-3-27b-it", "messages": messages, "top_p": 0.5, "stop": "END",
            "max_tokens": 99, "max_completion_tokens": 7, "temperature": 0.1, "seed": 3})
    assert response.status_code == 200, response.text
    assert "x-session-id" not in response.headers
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "gemma-3-27b-it"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == (body["usage"]["prompt_tokens"]
                                             + body["usage"]["completion_tokens"])
    sent = seen[0]
    assert sent["messages"] == [{"role": "system", "content": "Be terse."},
                                {"role": "user", "content": "ping"}]
    assert (sent["top_p"], sent["stop"], sent["max_tokens"], sent["temperature"]) == (
        0.5, ["END"], 7, 0.1)


def test_character_turn_uses_persona_and_keeps_system_text_out_of_the_transcript(
        fake_upstream: FakeLLM, client: TestClient) -> None:
    character = client.post("/api/characters", json={
        "name": "Mia", "persona": "A cheerful barista."}).json()["data"]
    fake_upstream.reply = "Welcome in!"
    history = [{"role": "system", "content": "Answer in one line."},
               {"role": "user", "content": "Hello"}]
    first = _turn(client, history, model=f"character/{character['id']}", user="u1")
    assert first.status_code == 200, first.text
    session_id = first.headers["x-session-id"]
    prompt = fake_upstream.chat_prompts[-1]
    assert prompt[0]["role"] == "system"
    assert "A cheerful barista." in prompt[0]["content"]
    assert prompt[0]["content"].index("barista") < prompt[0]["content"].index("one line")

    fake_upstream.reply = "A latte, coming up."
    history += [{"role": "assistant", "content": "Welcome in!"},
                {"role": "user", "content": "A latte please"}]
    again = _turn(client, history, model=f"character/{character['id']}", user="u1")
    assert again.headers["x-session-id"] == session_id
    history += [{"role": "assistant", "content": "A latte, coming up."},
                {"role": "user", "content": "Thanks"}]
    _turn(client, history, model=f"character/{character['id']}",
          headers={"X-Session-Id": session_id})
    assert _stored(client, session_id) == [
        ("user", "Hello"), ("assistant", "Welcome in!"), ("user", "A latte please"),
        ("assistant", "A latte, coming up."), ("user", "Thanks"),
        ("assistant", "A latte, coming up.")]
    assert [m["role"] for m in fake_upstream.chat_prompts[-1]] == [
        "system", "user", "assistant", "user", "assistant", "user"]


def test_plain_model_with_a_session_header_keeps_a_session(fake_upstream: FakeLLM,
                                                          client: TestClient) -> None:
    response = _turn(client, [{"role": "user", "content": "hi"}], model="any-model",
                     headers={"X-Session-Id": "my-session"})
    assert response.headers["x-session-id"] == "my-session"
    assert _stored(client, "my-session") == [("user", "hi"), ("assistant", fake_upstream.reply)]


def test_streamed_turn_is_openai_chunks_and_is_stored(fake_upstream: FakeLLM,
                                                      client: TestClient) -> None:
    fake_upstream.reply = "one two three"
    with client.stream("POST", "/v1/chat/completions", headers={"X-Session-Id": "s-stream"},
                       json={"model": "m", "stream": True,
                             "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "count"}]}) as response:
        assert response.headers["x-session-id"] == "s-stream"
        text = "".join(response.iter_text())
    assert text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(block.removeprefix("data: "))
              for block in text.removesuffix("data: [DONE]\n\n").strip().split("\n\n")]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                   if c["choices"]) == "one two three"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert _stored(client, "s-stream")[-1] == ("assistant", "one two three")


def test_an_upstream_refusing_a_plain_model_is_the_callers_404(settings_env,
                                                              client: TestClient) -> None:
    app = FastAPI()
    app.post("/v1/chat/completions")(lambda: JSONResponse(
        {"object": "error", "message": "The model `nope` does not exist.", "code": 404}, 404))
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/v1/chat/completions", json={
            "model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "does not exist" in response.json()["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
     "temperature"),
])
def test_bad_requests_are_400_in_openais_shape(client: TestClient, body: dict, param: str) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


def test_only_v1_answers_in_openais_shape(client: TestClient) -> None:
    assert client.get("/v1/missing").json()["error"]["type"] == "invalid_request_error"
    assert client.get("/api/missing").json()["success"] is False
    bad_header = client.post("/v1/chat/completions", headers={"X-Session-Id": "../x"},
                             json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert bad_header.status_code == 400
    assert bad_header.json()["error"]["code"] == "invalid_session_id"


def test_api_keys_sign_in_as_their_user_and_nothing_else_does(
        settings_env, client: TestClient, fake_upstream: FakeLLM, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"sha256:{digest('sk-good')}: key-user\n")
    settings_env(API_KEYS_FILE=str(keys), JWT_SECRET=SECRET)
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-bad"}).json()[
        "error"]["type"] == "authentication_error"
    answer = client.post("/v1/chat/completions", headers={
        "Authorization": "Bearer sk-good", "X-Session-Id": "keyed"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    assert client.get("/api/chat/sessions/keyed", headers=bearer("key-user")).status_code == 200
    assert client.get("/api/chat/sessions/keyed", headers=bearer("someone")).status_code == 404


def test_api_keys_alone_turn_auth_on_for_v1(settings_env, client: TestClient,
                                             tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({digest("sk-good"): "key-user"}))
    settings_env(API_KEYS_FILE=str(keys))
    missing = client.get("/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"


def test_a_key_file_with_a_plain_key_in_it_is_refused_whole(settings_env, client: TestClient,
                                                             tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({digest("sk-good"): "a", "sk-plain-key": "b"}))
    settings_env(API_KEYS_FILE=str(keys))
    response = client.get("/v1/models", headers={"Authorization": "Bearer sk-good"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
    assert "sk-plain-key" not in response.text


def test_sessions_derive_from_user_field_or_first_message_within_the_caller() -> None:
    def body(**more: object) -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate(
            {"model": "character/c", "messages": [{"role": "user", "content": "hi"}], **more})

    alice, bob = User("alice", True), User("bob", True)
    assert session_for(alice, body(), "c") == session_for(alice, body(), "c")
    assert session_for(alice, body(), "c") != session_for(bob, body(), "c")
    assert session_for(alice, body(user="x"), "c") != session_for(alice, body(user="y"), "c")
    assert session_for(alice, body(user="x"), "c") != session_for(alice, body(user="x"), "d")


def test_pcm_is_24khz_16bit_mono() -> None:
    second = pcm_to_wav(bytes(2 * 22050), 22050)
    assert len(pcm_24k(second)) == 2 * PCM_RATE
    with wave.open(io.BytesIO(second)) as reader:
        assert reader.getframerate() == 22050


def test_a_swipe_after_the_reply_was_delivered_is_a_new_version_of_it(
        fake_upstream: FakeLLM, client: TestClient) -> None:
    """SillyTavern's swipe, Open WebUI's regenerate and RisuAI's reroll re-send the history
    without the last reply: each is another version of it (issue 18's regenerate), the
    newest selected, never a second reply after the first."""
    headers = {"X-Session-Id": "s-regen"}
    history = [{"role": "user", "content": "Hello"}]
    _turn(client, history, model="m", headers=headers)
    history += [{"role": "assistant", "content": fake_upstream.reply},
                {"role": "user", "content": "Tell me more"}]
    fake_upstream.reply = "first take"
    _turn(client, history, model="m", headers=headers)
    asked = len(fake_upstream.chat_prompts)
    for take in ("second take", "third take"):
        fake_upstream.reply = take
        answer = _turn(client, history, model="m", headers=headers)
        assert answer.json()["choices"][0]["message"]["content"] == take
    assert len(fake_upstream.chat_prompts) == asked + 2
    assert [m[1] for m in _stored(client, "s-regen")] == [
        "Hello", history[1]["content"], "Tell me more", "third take"]
    last = client.get("/api/chat/sessions/s-regen").json()["data"]["messages"][-1]
    assert last["alternatives"] == ["first take", "second take", "third take"]
    assert last["selected"] == 2
    assert fake_upstream.chat_prompts[-1][-1]["content"] == "Tell me more"


def test_going_on_from_an_older_version_selects_it_and_keeps_every_version(
        fake_upstream: FakeLLM, client: TestClient) -> None:
    """SillyTavern shows a reply's versions as swipes; the user picks one and writes on,
    and the history then holds that version: the stored reply selects it (its versions
    kept), rather than being cut back and replaced by the client's copy."""
    headers = {"X-Session-Id": "s-pick"}
    history = [{"role": "user", "content": "Hello"}]
    for take in ("take one", "take two", "take three"):
        fake_upstream.reply = take
        _turn(client, history, model="m", headers=headers)
    fake_upstream.reply = "after take one"
    history += [{"role": "assistant", "content": "take  one"}, {"role": "user", "content": "Go on"}]
    answer = _turn(client, history, model="m", headers=headers)
    assert answer.json()["choices"][0]["message"]["content"] == "after take one"
    messages = client.get("/api/chat/sessions/s-pick").json()["data"]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Hello"), ("assistant", "take one"), ("user", "Go on"),
        ("assistant", "after take one")]
    assert messages[1]["alternatives"] == ["take one", "take two", "take three"]
    assert messages[1]["selected"] == 0
    assert [m["content"] for m in fake_upstream.chat_prompts[-1][1:]] == [
        "Hello", "take one", "Go on"]


def test_a_first_exchange_re_sent_is_a_swipe_on_v1(fake_upstream: FakeLLM,
                                                   client: TestClient) -> None:
    """A `/v1` client re-sends the whole conversation, so even a lone message already
    answered is a swipe there (on `/api/chat` it would be a retry)."""
    headers = {"X-Session-Id": "s-first-swipe"}
    history = [{"role": "user", "content": "Hello"}]
    fake_upstream.reply = "one"
    _turn(client, history, model="m", headers=headers)
    fake_upstream.reply = "two"
    assert _turn(client, history, model="m", headers=headers).json()[
        "choices"][0]["message"]["content"] == "two"
    assert _stored(client, "s-first-swipe") == [("user", "Hello"), ("assistant", "two")]


def test_a_re_send_while_the_reply_is_generated_gets_that_reply_once(
        fake_upstream: FakeLLM, client: TestClient) -> None:
    """A client that gives up and sends the same request again while the first is being
    answered waits for it and gets it: one generation, no alternative."""
    import threading

    headers = {"X-Session-Id": "s-inflight"}
    history = [{"role": "user", "content": "Hello"}]
    fake_upstream.reply, fake_upstream.reply_delay_s = "slow answer", 1.0
    answers: list[httpx.Response] = []
    first = threading.Thread(target=lambda: answers.append(
        _turn(client, history, model="m", headers=headers)))
    first.start()
    while not fake_upstream.chat_prompts:
        threading.Event().wait(0.01)
    second = _turn(client, history, model="m", headers=headers)
    first.join()
    assert second.json()["choices"][0]["message"]["content"] == "slow answer"
    assert answers[0].json()["choices"][0]["message"]["content"] == "slow answer"
    assert len(fake_upstream.chat_prompts) == 1
    last = client.get("/api/chat/sessions/s-inflight").json()["data"]["messages"][-1]
    assert last.get("alternatives") is None


@pytest.mark.parametrize("form", ["sillytavern", "sillytavern-prefill", "risuai"])
def test_continue_extends_the_stored_reply_and_answers_only_the_new_text(
        form: str, fake_upstream: FakeLLM, client: TestClient) -> None:
    """SillyTavern's Continue (`public/scripts/openai.js`: the partial reply, then a system
    `[Continue the following message. ...: <partial>]`; with `continue_prefill` the partial
    reply ends the history) and RisuAI's (a system `[Continue the last response]`)."""
    headers = {"X-Session-Id": f"s-continue-{form}"}
    fake_upstream.reply = "The night was"
    history = [{"role": "user", "content": "Tell a story"}]
    _turn(client, history, model="m", headers=headers)
    history.append({"role": "assistant", "content": "The night was"})
    if form == "sillytavern":
        history.append({"role": "system", "content": (
            "[Continue the following message. Do not include ANY parts of the original "
            "message. Use capitalization and punctuation as if your reply is a part of the "
            "original message: The night was]")})
    elif form == "risuai":
        history.append({"role": "system", "content": "[Continue the last response]"})
    fake_upstream.reply = "dark and cold."
    answer = _turn(client, history, model="m", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "dark and cold."
    assert _stored(client, f"s-continue-{form}") == [
        ("user", "Tell a story"), ("assistant", "The night was dark and cold.")]
    assert not any("Continue the" in m["content"] for m in fake_upstream.chat_prompts[-1])


def test_impersonate_answers_the_users_line_and_stores_nothing(
        fake_upstream: FakeLLM, client: TestClient) -> None:
    headers = {"X-Session-Id": "s-impersonate"}
    history = [{"role": "user", "content": "Hello"}]
    fake_upstream.reply = "Hi there."
    _turn(client, history, model="m", headers=headers)
    before = _stored(client, "s-impersonate")
    fake_upstream.reply = "I wave back."
    answer = _turn(client, [*history, {"role": "assistant", "content": "Hi there."},
                            {"role": "system", "content": (
                                "[Write your next reply from the point of view of Ann, using "
                                "the chat history so far as a guideline for the writing style "
                                "of Ann. Don't write as Mina or system. Don't describe "
                                "actions of Mina.]")}], model="m", headers=headers)
    assert answer.json()["choices"][0]["message"]["content"] == "I wave back."
    assert _stored(client, "s-impersonate") == before
    prompt = fake_upstream.chat_prompts[-1]
    assert prompt[-1]["role"] == "user" and "point of view of Ann" in prompt[-1]["content"]


@pytest.mark.parametrize("stream", [False])
def test_a_quiet_prompt_changes_no_session_and_creates_none(
        stream: bool, fake_upstream: FakeLLM, client: TestClient) -> None:
    """SillyTavern's summarize extension (`generateQuietPrompt`): the chat, then its
    instruction as a last system message, not streamed; and `generateRaw`'s bare
    `[system, user]` beside a session that has another history."""
    headers = {"X-Session-Id": "s-quiet"}
    history = [{"role": "user", "content": "Hello"}]
    fake_upstream.reply = "Hi there."
    _turn(client, history, model="character-less", headers=headers)
    before = _stored(client, "s-quiet")
    fake_upstream.reply = "A summary."
    quiet = _turn(client, [*history, {"role": "assistant", "content": "Hi there."},
                           {"role": "system", "content": "Summarize the chat so far."}],
                  model="m", headers=headers, stream=stream)
    assert quiet.json()["choices"][0]["message"]["content"] == "A summary."
    raw = _turn(client, [{"role": "system", "content": "You summarize."},
                         {"role": "user", "content": "Summarize: hello, hi there"}],
                model="m", headers=headers, stream=stream)
    assert raw.json()["choices"][0]["message"]["content"] == "A summary."
    assert _stored(client, "s-quiet") == before
    assert fake_upstream.chat_prompts[-2][-1] == {"role": "user",
                                                  "content": "Summarize the chat so far."}


def test_a_sillytavern_style_request_is_taken_as_it_comes(settings_env, client: TestClient) -> None:
    """Knobs we do not use are ignored, empty and extra stop strings do not refuse the
    turn, and a `user` object (as some UIs send) still names the session."""
    seen: list[dict] = []
    with serve(recording_upstream(seen, finish_reason="length")) as url:
        settings_env(LLM_BASE_URL=url)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi", "name": "Ann"}],
                "stop": ["", *[f"\n{n}:" for n in range(6)]], "presence_penalty": 0.7,
                "frequency_penalty": 0.2, "logit_bias": {}, "seed": -1, "n": 1,
                "user": {"id": "owui-42", "name": "Ann"}, "stream": False}
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert seen[0]["stop"] == [f"\n{n}:" for n in range(6)]
    assert seen[0]["presence_penalty"] == 0.7 and "logit_bias" not in seen[0]  # {} is none


def test_an_upstream_failing_mid_stream_is_an_error_event_the_sdk_raises(
        settings_env, client: TestClient) -> None:
    import openai
    from fastapi.responses import StreamingResponse

    from local_runner.app import build_app

    upstream = FastAPI()

    async def events() -> AsyncIterator[str]:
        yield 'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
        yield 'data: {"error": {"message": "CUDA out of memory"}}\n\n'

    upstream.post("/v1/chat/completions")(
        lambda: StreamingResponse(events(), media_type="text/event-stream"))
    with serve(upstream) as llm_url:
        settings_env(LLM_BASE_URL=llm_url)
        with serve(build_app()) as url:
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0)
            stream = sdk.chat.completions.create(
                model="m", stream=True, messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Session-Id": "s-broken"})
            with pytest.raises(openai.APIError, match="CUDA out of memory"):
                for _ in stream:
                    pass
            # read as the same anonymous client (its address: the SDK keeps no cookie)
            stored = httpx.get(f"{url}/api/chat/sessions/s-broken").json()["data"]["messages"]
    assert (stored[-1]["content"], stored[-1]["cut"]) == ("Hel", True)

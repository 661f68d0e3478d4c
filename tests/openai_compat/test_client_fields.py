"""What the role-play clients send to `POST /v1/chat/completions` is taken whole, a knob
out of range is a 400 naming it, and a failure after the stream began ends it in a way
both SillyTavern and the `openai` SDK show.

The bodies are as each client builds them:
- SillyTavern (SillyTavern/SillyTavern, release ba6f7b7, 1.12.6): the browser's
  `public/scripts/openai.js` `sendOpenAIRequest` sends `frequency_penalty`,
  `presence_penalty`, `top_p`, `max_tokens`, `logit_bias` (`{}` when no bias preset),
  `stop` only when non-empty, `seed` only when >= 0, `logprobs: 5` with token
  probabilities on; its server (`src/endpoints/backends/chat-completions.js`, the
  `CHAT_COMPLETION_SOURCES.CUSTOM` branch) turns that into `logprobs: true, top_logprobs:
  5`, drops what is undefined and merges the user's `custom_include_body` (where vLLM's
  own knobs go). Example messages are `system` messages named `example_user` /
  `example_assistant`.
- RisuAI (kwaroran/RisuAI, `src/ts/process/request/openAI.ts`): `max_tokens`,
  `logit_bias` (token ids, left out when empty), `seed` when > 0, and through
  `applyParameters` (`request.ts`) `temperature`, `top_p`, `top_k`, `min_p`,
  `repetition_penalty`, `frequency_penalty`, `presence_penalty`, `top_a`.
- Open WebUI (open-webui/open-webui, `backend/open_webui/utils/payload.py`
  `apply_model_params_to_body_openai`): `temperature`, `top_p`, `min_p`, `max_tokens`,
  `frequency_penalty`, `presence_penalty`, `reasoning_effort`, `seed`, `stop`,
  `logit_bias`, and any other model parameter as it is named (`top_k`, `repeat_penalty`,
  `num_ctx`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from roleplay.chat.models import TurnOptions
from roleplay.llm.sampling import Sampling
from roleplay.openai_compat.models import ChatCompletionRequest
from roleplay.openai_compat.streaming import DONE, ChunkFormat, error_event
from tests.support.recording_upstream import recording_upstream
from tests.support.upstream_server import serve

SILLYTAVERN = {
    "messages": [
        {"role": "system", "content": "Write Mia's next reply in a fictional chat."},
        {"role": "system", "content": "[Example Chat]"},
        {"role": "system", "name": "example_user", "content": "Hi!"},
        {"role": "system", "name": "example_assistant", "content": "Welcome to the cafe!"},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "user", "name": "Ann", "content": "Good morning!"}],
    "model": "m", "temperature": 1, "max_tokens": 300, "stream": False,
    "presence_penalty": 0, "frequency_penalty": 0, "top_p": 1, "logit_bias": {}, "seed": 1234,
    "logprobs": True, "top_logprobs": 5,
    # custom_include_body, the user's YAML for vLLM
    "repetition_penalty": 1.05, "min_p": 0.1, "top_k": 40}
RISUAI = {
    "model": "m", "messages": [{"role": "system", "content": "You are Mia."},
                               {"role": "user", "content": "Hi"}],
    "max_tokens": 500, "logit_bias": {"1734": -100, "29871": 5}, "stream": False, "seed": 7,
    "temperature": 0.8, "top_p": 1, "frequency_penalty": 0.7, "presence_penalty": 0.7,
    "repetition_penalty": 1, "min_p": 0, "top_k": 0, "top_a": 0}
OPEN_WEBUI = {
    "model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": False,
    "temperature": 0.8, "top_p": 0.9, "min_p": 0.05, "max_tokens": 256, "frequency_penalty": 0.1,
    "presence_penalty": 0.2, "seed": 42, "stop": ["</s>"], "logit_bias": {"42": 2},
    "reasoning_effort": "low", "top_k": 40, "repeat_penalty": 1.1, "num_ctx": 8192}


@pytest.mark.parametrize(("body", "sampling"), [
    (SILLYTAVERN, Sampling(temperature=1, max_tokens=300, top_p=1, seed=1234,
                           presence_penalty=0, frequency_penalty=0, repetition_penalty=1.05,
                           top_k=40, min_p=0.1)),
    (RISUAI, Sampling(temperature=0.8, max_tokens=500, top_p=1, seed=7, presence_penalty=0.7,
                      frequency_penalty=0.7, repetition_penalty=1, top_k=0, min_p=0,
                      logit_bias=((1734, -100), (29871, 5)))),
    (OPEN_WEBUI, Sampling(temperature=0.8, max_tokens=256, top_p=0.9, stop=("</s>",), seed=42,
                          presence_penalty=0.2, frequency_penalty=0.1, repetition_penalty=1.1,
                          top_k=40, min_p=0.05, logit_bias=((42, 2),))),
], ids=["sillytavern", "risuai", "open-webui"])
def test_each_clients_request_is_taken_whole_with_its_knobs(
        settings_env, client: TestClient, body: dict, sampling: Sampling) -> None:
    """Accepted as sent (names, logprobs and unknown keys included), and its knobs make the
    same `Sampling` by both routes a call can take: a pass-through builds it from the
    request, a session turn from the `TurnOptions` the request fills; an empty
    `logit_bias` (SillyTavern's `{}`) is none, Open WebUI's `repeat_penalty` is
    `repetition_penalty`."""
    seen: list[dict] = []
    with serve(recording_upstream(seen)) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "pong" and len(seen) == 1
    request = ChatCompletionRequest.model_validate(body)
    assert request.sampling() == sampling
    options = TurnOptions(temperature=sampling.temperature, max_tokens=sampling.max_tokens,
                          top_p=sampling.top_p, stop=list(sampling.stop) or None,
                          **request.sampling_options())
    assert options.sampling() == sampling


def test_a_request_without_knobs_asks_for_nothing_new() -> None:
    """No knob set: the pass-through's `Sampling` is `/api/chat`'s default one and a
    session turn gets no extra options, so the upstream's payload is as before."""
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {}})
    assert request.sampling() == Sampling() and request.sampling_options() == {}


@pytest.mark.parametrize(("more", "param"), [
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": "lots"}, "frequency_penalty"),
    ({"top_k": -5}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"min_p": 2}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repeat_penalty": -1}, "repeat_penalty"),
    ({"seed": 2**70}, "seed"),
    ({"logit_bias": {"hello": 5}}, "logit_bias.hello.[key]"),
    ({"logit_bias": {"5": 1000}}, "logit_bias.5"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"top_logprobs": 50}, "top_logprobs"),
    ({"logprobs": "sometimes"}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x", "name": "n" * 300}]}, "messages.0.name"),
    ({"n": 2}, "n"),
])
def test_a_knob_out_of_range_is_a_400_naming_it(client: TestClient, more: dict,
                                                 param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **more}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]


FORMAT = ChunkFormat(completion_id="chatcmpl-1", created=1, model="m", include_usage=True)


def _events(body: str) -> list[str]:
    return [block.removeprefix("data: ") for block in body.split("\n\n") if block]


def test_a_failure_mid_stream_is_an_error_chunk_with_an_empty_last_choice_then_done() -> None:
    """OpenAI's error object beside a last choice that adds nothing and says why it ended
    (`finish_reason: "error"`, as OpenRouter ends a stream that failed), then `[DONE]`;
    `error_event` (no stream at hand) makes the same ending."""
    for ending in (FORMAT.failure(502, "The LLM failed", "upstream_error"),
                   error_event(502, "The LLM failed", "upstream_error")):
        failure, done = _events(ending)
        chunk = json.loads(failure)
        assert chunk["error"] == {"message": "The LLM failed", "type": "server_error",
                                  "param": None, "code": "upstream_error"}
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                     "finish_reason": "error"}]
        assert done == "[DONE]"
    assert json.loads(_events(FORMAT.failure(502, "x", None))[0])["id"] == "chatcmpl-1"


def _broken_stream_app() -> FastAPI:
    app = FastAPI()

    async def events() -> AsyncIterator[str]:
        yield FORMAT.role()
        yield FORMAT.delta("Hel")
        yield FORMAT.failure(502, "The LLM failed", "upstream_error")

    app.post("/v1/chat/completions")(
        lambda: StreamingResponse(events(), media_type="text/event-stream"))
    return app


def test_the_openai_sdk_raises_the_failure_after_the_text_before_it() -> None:
    """The installed `openai` SDK's `Stream.__stream__` (openai/_streaming.py) raises
    `APIError(message=error["message"], body=error)` for any event with `error`, before
    it parses the event as a chunk; the deltas before it were read as usual. Both the
    sync and the async client."""
    with serve(_broken_stream_app()) as url:
        sync = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        read: list[str] = []
        with pytest.raises(openai.APIError, match="The LLM failed") as raised:
            for chunk in sync.chat.completions.create(
                    model="m", stream=True, messages=[{"role": "user", "content": "hi"}]):
                read.append(chunk.choices[0].delta.content or "")
        assert "".join(read) == "Hel"
        assert raised.value.code == "upstream_error"

        async def read_async() -> None:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
            stream = await client.chat.completions.create(
                model="m", stream=True, messages=[{"role": "user", "content": "hi"}])
            async for _ in stream:
                pass

        with pytest.raises(openai.APIError, match="The LLM failed"):
            asyncio.run(read_async())


class JsTypeError(Exception):
    """What the browser throws where SillyTavern reads a property of undefined."""


def sillytavern_reads(body: str) -> tuple[str, list[str]]:
    """The text SillyTavern shows and the toasts it raises for a streamed answer, read as
    its release ba6f7b7 reads one (a line-for-line reading of the JavaScript):

    `public/scripts/sse-stream.js` `EventSourceStream`: events split on blank lines
    (`streamBuffer.split(/\\r\\n\\r\\n|\\r\\r|\\n\\n/g)`, the unterminated rest is
    kept back, `events.pop()`), `data:` lines joined by newlines.

    `public/scripts/openai.js` `sendOpenAIRequest`, `streamData()`:
        if (rawData === '[DONE]') return;
        tryParseStreamingError(response, rawData);
        const parsed = JSON.parse(rawData);
        ...
        text += getStreamingReply(parsed);
    `tryParseStreamingError`: `if (data.error) { toastr.error(data.error.message ||
    response.statusText, 'Chat Completion API'); throw new Error(data); }`, inside a
    `try { ... } catch { // No JSON. Do nothing. }` that swallows its own throw, so the
    event is read on. `getStreamingReply` (custom source):
        return data.choices[0]?.delta?.content ?? data.choices[0]?.message?.content
            ?? data.choices[0]?.text ?? '';
    which throws a TypeError when `choices` is missing: the stream ends as a failure in
    the middle of the reply.
    """
    text, toasts = "", []
    blocks = re.split(r"\r\n\r\n|\r\r|\n\n", body)[:-1]
    for block in blocks:
        data = "\n".join(line.split(":", 1)[1].removeprefix(" ")
                         for line in re.split(r"\n|\r|\r\n", block) if line.startswith("data"))
        if not data:
            continue
        if data == "[DONE]":
            return text, toasts
        parsed = json.loads(data)
        if isinstance(parsed, dict) and parsed.get("error"):
            toasts.append(parsed["error"].get("message"))
        choices = parsed.get("choices")
        if choices is None:
            raise JsTypeError("Cannot read properties of undefined (reading '0')")
        first: dict[str, Any] = choices[0] if choices else {}
        for value in ((first.get("delta") or {}).get("content"),
                      (first.get("message") or {}).get("content"), first.get("text")):
            if value is not None:
                text += value
                break
    return text, toasts


def test_sillytavern_shows_the_failure_and_keeps_the_text_before_it(
        settings_env, client: TestClient) -> None:
    """Through `/v1` with an upstream that fails after "Hel": SillyTavern's reading
    (`sillytavern_reads`) ends with the text "Hel" and one toast with the upstream's
    message, where an `error` event without `choices` would throw in `getStreamingReply`."""
    upstream = FastAPI()

    async def events() -> AsyncIterator[str]:
        yield 'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
        yield 'data: {"error": {"message": "CUDA out of memory"}}\n\n'

    upstream.post("/v1/chat/completions")(
        lambda: StreamingResponse(events(), media_type="text/event-stream"))
    with serve(upstream) as url:
        settings_env(LLM_BASE_URL=url)
        response = client.post("/v1/chat/completions", json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert response.text.endswith(DONE)
    text, toasts = sillytavern_reads(response.text)
    assert text == "Hel"
    assert len(toasts) == 1 and "CUDA out of memory" in toasts[0]
    with pytest.raises(JsTypeError):
        sillytavern_reads('data: {"error": {"message": "bare"}}\n\n' + DONE)

"""Which kind of server the LLM on Server A is, and everything that differs between the kinds.

`LLM_SERVICE` names one, and `upstream_dialect(settings)` is the only place that reads
it; the rest of Server B asks the dialect instead of comparing names:

- `OpenAICompatible`: vLLM, or any OpenAI-compatible server (llama.cpp's, llama-cpp-python's).
  `POST /v1/chat/completions` (SSE when streaming, usage asked for), `GET /v1/models`
  with each model's context (vLLM's `max_model_len`; else llama.cpp's `/props` `n_ctx`).
  It can count a prompt exactly (`prompt_counter` finds which of its routes the server
  has), so the context budget keeps no margin. Its health is `GET /health`.
- `Ollama`: `POST /api/chat` (NDJSON when streaming) with `num_ctx` chosen per request,
  `truncate` and `shift` off, and its `keep_alive`; `GET /api/tags`, where `gemma3`
  answers for `gemma3:latest`; `POST /api/show` for each model's context and vision. It
  has no tokenizer endpoint, so prompts are planned `OLLAMA_SAFETY_MARGIN` below the
  `num_ctx` sent. Its health is `/api/version` and the model on `/api/tags`.

A dialect says what to send and how to read what comes back; the HTTP around a chat or a
model list (pooling, failover, the GPU lease, error mapping) is the client's
(`llm.client`), the caches are `served_models`' and `upstream_limits`'.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from roleplay.core.errors import UpstreamError
from roleplay.llm.answers import Completion, ModelLimits, StreamChunk, UpstreamModel, Usage
from roleplay.llm.wire import (
    ProbeDown,
    http_holder,
    upstream_call,
    upstream_message,
)

if TYPE_CHECKING:
    import httpx

    from roleplay.core.settings import Settings
    from roleplay.llm.client import CompletionRequest

Listed = Callable[[], Awaitable[list[UpstreamModel]]]
"""The upstream's model list, as `served_models` keeps it."""
HttpGet = Callable[[str], Awaitable["httpx.Response"]]
"""A GET within the health check's time limit."""
Probe = Callable[[], Awaitable[None]]
"""Returns if the upstream can serve; raises `ProbeDown` if it answered that it cannot."""

LIMITS_NAME = "LLM upstream"
_OLLAMA_NAMES = {"repetition_penalty": "repeat_penalty"}
"""`Sampling.chosen_knobs` names Ollama spells otherwise."""


class UpstreamDialect(ABC):
    """What one kind of LLM server wants sent and how it answers."""

    service: ClassVar[str]
    """As `LLM_SERVICE` names it (and `/api/chat/models` reports it)."""
    name: ClassVar[str]
    """The upstream in error messages and metrics."""
    chat_path: ClassVar[str]
    models_path: ClassVar[str]
    counts_prompts: ClassVar[bool]
    """Whether the server can count a prompt in its own tokens (`prompt_counter` asks it at
    the edge of the budget); if not, the budget keeps `safety_margin`."""
    context_per_request: ClassVar[bool]
    """Whether Server B chooses the context each request runs with (Ollama's `num_ctx`:
    `MAX_CONTEXT_TOKENS` clamped to the model's own), rather than the server (vLLM's
    `max_model_len`)."""
    safety_margin: float
    """The fraction of the context the budget leaves unplanned, for a server that cannot
    count exactly."""

    @abstractmethod
    def payload(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        """The body of the chat request."""

    @abstractmethod
    def completion(self, body: Any) -> Completion:
        """A whole chat answer, as its JSON; an answer of the wrong shape is a 502."""

    @abstractmethod
    def stream_chunks(self, lines: AsyncIterator[str]) -> AsyncGenerator[StreamChunk, None]:
        """A streamed answer's lines as text deltas, always ending with one `done` chunk
        (usage, finish reason, model); a broken or unfinished stream is a 502."""

    @abstractmethod
    def models(self, body: Any) -> list[UpstreamModel]:
        """The model list's JSON as models."""

    def find(self, name: str, models: dict[str, UpstreamModel]) -> UpstreamModel | None:
        """The listed model a request's `name` means."""
        return models.get(name)

    @abstractmethod
    async def read_limits(self, base: str, model: str, listed: Listed) -> ModelLimits:
        """What the server runs `model` with, as it says; unknown where it does not.
        Raises the upstream's errors when it cannot be asked."""

    @abstractmethod
    def health_probe(self, base: str, model: str, get: HttpGet) -> Probe:
        """Can the server at `base` serve `model`? (`web.health` times and reports it.)"""


class OpenAICompatible(UpstreamDialect):
    """vLLM's (or llama.cpp's) `/v1/chat/completions` and `/v1/models`."""

    service = "vllm"
    name = "LLM upstream (OpenAI-compatible)"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"
    counts_prompts = True
    context_per_request = False
    safety_margin = 0.0

    def payload(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        """vLLM's ChatCompletionRequest takes every knob of `Sampling` by its own name
        (`seed`, the penalties, `top_k`, `min_p`, `logit_bias`); llama-cpp-python's server
        ignores `repetition_penalty` (its name is `repeat_penalty`) and takes the rest."""
        sampling = request.sampling
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": list(request.messages),
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_tokens,
            "stream": stream,
        }
        if sampling.top_p is not None:
            payload["top_p"] = sampling.top_p
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        payload.update(sampling.chosen_knobs())
        if sampling.logit_bias:
            payload["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias}
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def completion(self, body: Any) -> Completion:
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise UpstreamError(f"{self.name} answered without choices[0].message")
        return Completion(
            content=_text(choice["message"].get("content"), self.name, "message content"),
            usage=_usage_from(body.get("usage"), "prompt_tokens", "completion_tokens"),
            finish_reason=_str_or_none(choice.get("finish_reason")),
            model=_str_or_none(body.get("model")),
        )

    async def stream_chunks(self, lines: AsyncIterator[str]) -> AsyncGenerator[StreamChunk, None]:
        """Server-sent events: deltas, the usage chunk (`choices: []`), `[DONE]`; an
        `error` event mid-stream is vLLM's failure after the 200."""
        usage: Usage | None = None
        finish_reason: str | None = None
        model: str | None = None
        events = 0
        async for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            events += 1
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                raise UpstreamError(f"{self.name} streamed an unreadable event")
            if "error" in event:
                raise UpstreamError(f"{self.name} failed mid-stream: "
                                    f"{upstream_message(data.encode(), 'unknown error')}")
            model = _str_or_none(event.get("model")) or model
            if event.get("usage"):
                usage = _usage_from(event["usage"], "prompt_tokens", "completion_tokens")
            choices = event.get("choices") or []
            if not (isinstance(choices, list) and all(isinstance(c, dict) for c in choices)):
                raise UpstreamError(f"{self.name} streamed an event without a list of choices")
            for choice in choices:
                raw_delta = choice.get("delta") or {}
                if not isinstance(raw_delta, dict):
                    raise UpstreamError(f"{self.name} streamed a delta that is not an object")
                delta = _text(raw_delta.get("content"), self.name, "streamed delta")
                if delta:
                    yield StreamChunk(delta=delta)
                finish_reason = _str_or_none(choice.get("finish_reason")) or finish_reason
        if not events:
            raise UpstreamError(f"{self.name} answered the stream without any event")
        yield StreamChunk(done=True, usage=usage, finish_reason=finish_reason, model=model)

    def models(self, body: Any) -> list[UpstreamModel]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UpstreamError(f"{self.name} answered /v1/models without a data list")
        return [
            UpstreamModel(
                id=str(item.get("id")),
                owned_by=item.get("owned_by"),
                context_length=_int_or_none(item.get("max_model_len")),
            )
            for item in data
            if isinstance(item, dict) and item.get("id")
        ]

    async def read_limits(self, base: str, model: str, listed: Listed) -> ModelLimits:
        # The model list `served_models` keeps (and checks `model` names against) has vLLM's
        # max_model_len: one fetch serves both, and every model.
        card = {card.id: card for card in await listed()}.get(model)
        if card is not None and card.context_length:
            return ModelLimits(card.context_length, source="vLLM /v1/models max_model_len")
        props = await _get_json(f"{base}/props")
        if isinstance(props, dict):
            settings_ = props.get("default_generation_settings")
            length = _positive_int(settings_.get("n_ctx")) if isinstance(settings_, dict) else None
            length = length or _positive_int(props.get("n_ctx"))
            if length:
                return ModelLimits(length, source="llama.cpp /props n_ctx")
        return ModelLimits()

    def health_probe(self, base: str, model: str, get: HttpGet) -> Probe:
        """`GET /health`: 200, or vLLM's 503 when its engine is dead (`/v1/models` stays
        200 then); a server without it (llama-cpp-python's: 404) is asked `/v1/models`."""

        async def probe() -> None:
            response = await get(f"{base}/health")
            if response.status_code == 404:  # llama-cpp-python's server has no /health
                response = await get(f"{base}/v1/models")
            if response.status_code != 200:
                raise ProbeDown.answered(response)

        return probe


@dataclass(frozen=True)
class Ollama(UpstreamDialect):
    """Ollama's `/api/chat` (NDJSON when streaming), `/api/tags` and `/api/show`."""

    keep_alive: str
    """`OLLAMA_KEEP_ALIVE`, sent with every chat request."""
    safety_margin: float
    """`OLLAMA_SAFETY_MARGIN`."""

    service = "ollama"
    name = "LLM upstream (Ollama)"
    chat_path = "/api/chat"
    models_path = "/api/tags"
    counts_prompts = False
    context_per_request = True

    def payload(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        """`num_ctx` so Ollama's default context does not apply; `truncate` and `shift`
        off so a prompt too long is a 400, not history silently cut (server/prompt.go).
        The optional knobs go in `options` by Ollama's names (api/types.go Options:
        `repetition_penalty` is `repeat_penalty`); Ollama has no `logit_bias`, so none
        is sent."""
        sampling = request.sampling
        options: dict[str, Any] = {"temperature": sampling.temperature,
                                   "num_predict": sampling.max_tokens}
        if request.context_tokens:
            options["num_ctx"] = request.context_tokens
        if sampling.top_p is not None:
            options["top_p"] = sampling.top_p
        if sampling.stop:
            options["stop"] = list(sampling.stop)
        options.update({_OLLAMA_NAMES.get(name, name): value
                        for name, value in sampling.chosen_knobs().items()})
        return {
            "model": request.model,
            "messages": list(request.messages),
            "stream": stream,
            "options": options,
            "keep_alive": ollama_duration(self.keep_alive),
            "truncate": False,
            "shift": False,
        }

    @staticmethod
    def _usage(body: dict[str, Any]) -> Usage:
        return _usage_from(body, "prompt_eval_count", "eval_count")

    def completion(self, body: Any) -> Completion:
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise UpstreamError(f"{self.name} answered without message.content")
        return Completion(content=_text(body["message"].get("content"), self.name, "message content"),
                          usage=self._usage(body),
                          finish_reason=_str_or_none(body.get("done_reason")),
                          model=_str_or_none(body.get("model")))

    async def stream_chunks(self, lines: AsyncIterator[str]) -> AsyncGenerator[StreamChunk, None]:
        """NDJSON: message deltas, then a `done` line with the counts; an `error` line is
        Ollama's failure after output began."""
        async for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                raise UpstreamError(f"{self.name} streamed an unreadable line")
            if event.get("error"):
                raise UpstreamError(f"{self.name} failed mid-stream: {event['error']}")
            delta = _text(_object(event.get("message")).get("content"), self.name,
                          "streamed message")
            if delta:
                yield StreamChunk(delta=delta)
            if event.get("done"):
                yield StreamChunk(done=True, usage=self._usage(event),
                                  finish_reason=_str_or_none(event.get("done_reason")),
                                  model=_str_or_none(event.get("model")))
                return
        raise UpstreamError(f"{self.name} ended the stream without a done line")

    def models(self, body: Any) -> list[UpstreamModel]:
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise UpstreamError(f"{self.name} answered /api/tags without a models list")
        return [
            UpstreamModel(
                id=str(item.get("model") or item.get("name")),
                details=item.get("details") or {},
            )
            for item in models
            if isinstance(item, dict) and (item.get("model") or item.get("name"))
        ]

    def find(self, name: str, models: dict[str, UpstreamModel]) -> UpstreamModel | None:
        """Ollama answers to `gemma3` for `gemma3:latest`."""
        found = models.get(name)
        if found is None and ":" not in name:
            found = models.get(f"{name}:latest")
        return found

    async def read_limits(self, base: str, model: str, listed: Listed) -> ModelLimits:
        return self.show_limits(await _get_json(f"{base}/api/show", {"model": model}))

    @staticmethod
    def show_limits(show: Any) -> ModelLimits:
        """`/api/show`'s `model_info["<general.architecture>.context_length"]` and
        `capabilities` (api/types.go ShowResponse)."""
        if not isinstance(show, dict):
            return ModelLimits()
        info = show.get("model_info")
        info = info if isinstance(info, dict) else {}
        arch = info.get("general.architecture")
        length = _positive_int(info.get(f"{arch}.context_length")) if arch else None
        if length is None:
            length = next((_positive_int(v) for k, v in info.items()
                           if k.endswith(".context_length") and _positive_int(v)), None)
        capabilities = show.get("capabilities")
        vision = "vision" in capabilities if isinstance(capabilities, list) else None
        return ModelLimits(length, vision, source="Ollama /api/show model_info")

    def health_probe(self, base: str, model: str, get: HttpGet) -> Probe:
        """`GET /api/version`, and `model` present in `/api/tags` (tagged or not)."""

        async def probe() -> None:
            version, tags = await asyncio.gather(get(f"{base}/api/version"),
                                                 get(f"{base}/api/tags"))
            for response in (version, tags):
                if response.status_code != 200:
                    raise ProbeDown.answered(response)
            if model not in _served_names(tags.json()) and f"{model}:latest" not in _served_names(
                    tags.json()):
                raise ProbeDown(f"model {model!r} is not in /api/tags (ollama pull {model})")

        return probe


def upstream_dialect(settings: Settings) -> UpstreamDialect:
    """The dialect `LLM_SERVICE` names, with its settings."""
    if settings.llm_service == "ollama":
        return Ollama(keep_alive=settings.ollama_keep_alive,
                      safety_margin=settings.ollama_safety_margin)
    return OpenAICompatible()


def ollama_duration(value: str) -> str | float:
    """Ollama's `keep_alive`: a number is seconds (negative: for ever), else a Go duration."""
    try:
        return float(value)
    except ValueError:
        return value


def _served_names(tags: object) -> set[str]:
    models = tags.get("models") if isinstance(tags, dict) else None
    names: set[str] = set()
    for item in models if isinstance(models, list) else []:
        for key in ("name", "model"):
            value = item.get(key) if isinstance(item, dict) else None
            if isinstance(value, str):
                names |= {value, value.removesuffix(":latest")}
    return names


async def _get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """The JSON answer to a limits question (a POST with `body`), or None for an answer
    that is not a 200 with JSON."""
    http = await http_holder.get()
    async with upstream_call(LIMITS_NAME):
        response = (await http.post(url, json=body) if body is not None
                    else await http.get(url))
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (an absent part)."""
    return value if isinstance(value, dict) else {}


def _text(value: Any, name: str, where: str) -> str:
    """Generated text: a string, or nothing (null); anything else is a broken answer."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UpstreamError(f"{name} answered a {where} that is not text")
    return value


def _usage_from(raw: Any, prompt_key: str, completion_key: str) -> Usage:
    usage = _object(raw)
    return Usage(_int_or_none(usage.get(prompt_key)), _int_or_none(usage.get(completion_key)))

"""Clients for the LLM on Server A: vLLM (any OpenAI-compatible server) or Ollama.

`LLM_SERVICE` picks one. Both share a pooled httpx client per event loop, with
separate connect and read timeouts, and translate every upstream failure into the
API's errors: unreachable → 502 `upstream_unavailable`, too slow → 504, an error
answer → 502 carrying the upstream's own message. An answer of the wrong shape (not
JSON, not an object, text that is not a string, a stream with no events) is a 502
`upstream_error` too, never a 500 or an empty reply; a malformed `usage` is only
ignored, since local estimates stand in for it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from roleplay.core import metrics
from roleplay.core.errors import NotConfigured, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from roleplay.core.http_pool import pooled_http
from roleplay.core.settings import Settings, get_settings
from roleplay.gpu import gpu_lease
from roleplay.ops.failover import base_urls, with_failover


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[ChatMessage]
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    context_tokens: int | None = None
    """The context the prompt was planned for: Ollama's `num_ctx` (one value per model)."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    content: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None  # as the upstream named the model that answered


@dataclass(frozen=True)
class StreamChunk:
    """A text delta, or (with `done`) the closing chunk carrying usage and the model."""

    delta: str = ""
    done: bool = False
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class UpstreamModel:
    id: str
    owned_by: str | None = None
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class LLMClient(Protocol):
    service: str
    base_url: str

    async def list_models(self) -> list[UpstreamModel]: ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]: ...


http_holder = pooled_http(lambda s: (s.llm_connect_timeout_s, s.llm_read_timeout_s),
                          max_connections=200, keepalive=40)


def upstream_message(body: bytes, fallback: str) -> str:
    """The human part of an upstream error body, whatever its dialect."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or fallback
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error:
            return str(error)[:500]
    return fallback


_LIMIT = re.compile(r"maximum context length is (\d+) tokens|available context size \((\d+) tokens")
_INPUT = re.compile(r"(\d+) input tokens|request \((\d+) tokens\)|\((\d+) in the messages")
_TOO_LONG = ("longer than the context length", "exceeds the context length",
             "exceeds the available context")


class ContextOverflow(UpstreamError):
    """The upstream refused the prompt as too long for its context: vLLM's 400 (with its
    limit and the prompt's size in its own tokens) or Ollama's (with neither)."""

    def __init__(self, message: str, *, limit: int | None, prompt_tokens: int | None) -> None:
        super().__init__(message, details={"upstream_status": 400})
        self.limit = limit
        self.prompt_tokens = prompt_tokens


def context_overflow(status: int, message: str, name: str) -> ContextOverflow | None:
    """vLLM's "This model's maximum context length is N tokens. However, your request has
    M input tokens" (or its `max_tokens` variant), llama-cpp-python's "... However, you
    requested T tokens (M in the messages, C in the completion)", llama.cpp's "request (M tokens) exceeds
    the available context size (N tokens)", which Ollama passes on with truncate off, or
    Ollama's own "the prompt is longer than the context length" (llm/llama_server.go)."""
    if status != 400:
        return None
    limit, count = _LIMIT.search(message), _INPUT.search(message)
    if limit is None and not any(phrase in message for phrase in _TOO_LONG):
        return None
    return ContextOverflow(f"{name} answered 400: {message}",
                           limit=_first_group(limit), prompt_tokens=_first_group(count))


def _first_group(match: re.Match[str] | None) -> int | None:
    if match is None:
        return None
    return next((int(group) for group in match.groups() if group), None)


@asynccontextmanager
async def upstream_call(name: str) -> AsyncIterator[None]:
    """Maps transport failures of one upstream call to the API's errors."""
    started = time.perf_counter()
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        raise UpstreamUnavailable(f"{name} is unreachable: {error or type(error).__name__}") from None
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{name} did not answer in time") from None
    except httpx.TransportError as error:
        raise UpstreamUnavailable(f"{name} connection failed: {type(error).__name__}") from None
    finally:
        metrics.observe("upstream_seconds", time.perf_counter() - started, upstream=name)


async def _raise_for_status(response: httpx.Response, name: str) -> None:
    if response.status_code < 400:
        return
    body = await response.aread()
    message = upstream_message(body, f"HTTP {response.status_code}")
    overflow = context_overflow(response.status_code, message, name)
    if overflow is not None:
        raise overflow
    raise UpstreamError(
        f"{name} answered {response.status_code}: {message}",
        details={"upstream_status": response.status_code},
    )


def _json(response: httpx.Response, name: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UpstreamError(f"{name} answered with something that is not JSON") from None


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


class OpenAICompatibleClient:
    """vLLM's (or llama.cpp's) `/v1/chat/completions` and `/v1/models`."""

    service = "vllm"
    name = "LLM upstream (OpenAI-compatible)"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")

    def _payload(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": [m.as_dict() for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.stop:
            payload["stop"] = list(request.stop)
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def list_models(self) -> list[UpstreamModel]:
        http = await http_holder.get()
        async with upstream_call(self.name):
            response = await http.get(f"{self.base_url}/v1/models")
            await _raise_for_status(response, self.name)
        body = _json(response, self.name)
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

    async def complete(self, request: CompletionRequest) -> Completion:
        http = await http_holder.get()
        async with gpu_lease("llm"), upstream_call(self.name):
            response = await http.post(
                f"{self.base_url}/v1/chat/completions", json=self._payload(request, False)
            )
            await _raise_for_status(response, self.name)
        body = _json(response, self.name)
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

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        http = await http_holder.get()
        usage: Usage | None = None
        finish_reason: str | None = None
        model: str | None = None
        events = 0
        async with gpu_lease("llm"), upstream_call(self.name), http.stream(
            "POST", f"{self.base_url}/v1/chat/completions", json=self._payload(request, True)
        ) as response:
            await _raise_for_status(response, self.name)
            async for line in response.aiter_lines():
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
        # The GPU lease has ended: a switch to speech need not wait for the caller to close.
        if not events:
            raise UpstreamError(f"{self.name} answered the stream without any event")
        yield StreamChunk(done=True, usage=usage, finish_reason=finish_reason, model=model)


class OllamaClient:
    """Ollama's `/api/chat` (NDJSON when streaming) and `/api/tags`."""

    service = "ollama"
    name = "LLM upstream (Ollama)"

    def __init__(self, base_url: str, keep_alive: str = "30m") -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.keep_alive = keep_alive

    def _payload(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        """`num_ctx` so Ollama's default context does not apply; `truncate` and `shift`
        off so a prompt too long is a 400, not history silently cut (server/prompt.go)."""
        options: dict[str, Any] = {"temperature": request.temperature,
                                   "num_predict": request.max_tokens}
        if request.context_tokens:
            options["num_ctx"] = request.context_tokens
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.stop:
            options["stop"] = list(request.stop)
        return {
            "model": request.model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": stream,
            "options": options,
            "keep_alive": ollama_duration(self.keep_alive),
            "truncate": False,
            "shift": False,
        }

    @staticmethod
    def _usage(body: dict[str, Any]) -> Usage:
        return _usage_from(body, "prompt_eval_count", "eval_count")

    async def list_models(self) -> list[UpstreamModel]:
        http = await http_holder.get()
        async with upstream_call(self.name):
            response = await http.get(f"{self.base_url}/api/tags")
            await _raise_for_status(response, self.name)
        body = _json(response, self.name)
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

    async def complete(self, request: CompletionRequest) -> Completion:
        http = await http_holder.get()
        async with gpu_lease("llm"), upstream_call(self.name):
            response = await http.post(f"{self.base_url}/api/chat",
                                       json=self._payload(request, False))
            await _raise_for_status(response, self.name)
        body = _json(response, self.name)
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise UpstreamError(f"{self.name} answered without message.content")
        return Completion(content=_text(body["message"].get("content"), self.name, "message content"),
                          usage=self._usage(body),
                          finish_reason=_str_or_none(body.get("done_reason")),
                          model=_str_or_none(body.get("model")))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        http = await http_holder.get()
        closing: StreamChunk | None = None
        async with gpu_lease("llm"), upstream_call(self.name), http.stream(
            "POST", f"{self.base_url}/api/chat", json=self._payload(request, True)
        ) as response:
            await _raise_for_status(response, self.name)
            async for line in response.aiter_lines():
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
                    closing = StreamChunk(done=True, usage=self._usage(event),
                                          finish_reason=_str_or_none(event.get("done_reason")),
                                          model=_str_or_none(event.get("model")))
                    break
        if closing is None:
            raise UpstreamError(f"{self.name} ended the stream without a done line")
        yield closing  # after the GPU lease ends: generation is over


def ollama_duration(value: str) -> str | float:
    """Ollama's `keep_alive`: a number is seconds (negative: for ever), else a Go duration."""
    try:
        return float(value)
    except ValueError:
        return value




class FailoverLLMClient:
    """The configured upstreams behind one client: each call goes through
    `ops.failover` (retry before the first byte, breakers); a stream fails over only
    until its first chunk has arrived."""

    def __init__(self, clients: list[OpenAICompatibleClient] | list[OllamaClient]) -> None:
        self.clients = {client.base_url: client for client in clients}
        self.primary = clients[0]
        self.service = self.primary.service
        self.name = self.primary.name
        self.base_url = self.primary.base_url
        """The first upstream's: what limits, counts and health ask (failover serves turns)."""

    async def list_models(self) -> list[UpstreamModel]:
        return await with_failover(self.name, list(self.clients),
                                   lambda url: self.clients[url].list_models())

    async def complete(self, request: CompletionRequest) -> Completion:
        return await with_failover(self.name, list(self.clients),
                                   lambda url: self.clients[url].complete(request))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        async def opened(url: str) -> tuple[AsyncIterator[StreamChunk], StreamChunk]:
            chunks = self.clients[url].stream(request)
            try:
                return chunks, await anext(chunks)
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise

        chunks, first = await with_failover(self.name, list(self.clients), opened)
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


def llm_client(settings: Settings | None = None) -> FailoverLLMClient:
    settings = settings or get_settings()
    urls = base_urls(settings.llm_base_url, settings.llm_base_urls)
    if not urls:
        raise NotConfigured("no LLM upstream: set LLM_BASE_URL (the local runner embeds one)")
    if settings.llm_service == "ollama":
        return FailoverLLMClient([OllamaClient(url, settings.ollama_keep_alive) for url in urls])
    return FailoverLLMClient([OpenAICompatibleClient(url) for url in urls])

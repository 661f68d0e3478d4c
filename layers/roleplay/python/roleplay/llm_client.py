"""Clients for the LLM on Server A: vLLM (any OpenAI-compatible server) or Ollama.

`LLM_SERVICE` picks one. Both share a pooled httpx client per event loop, with
separate connect and read timeouts, and translate every upstream failure into the
API's errors: unreachable → 502 `upstream_unavailable`, too slow → 504, an error
answer → 502 carrying the upstream's own message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from roleplay.errors import NotConfigured, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from roleplay.http_pool import pooled_http
from roleplay.settings import Settings, get_settings


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


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    content: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None


@dataclass(frozen=True)
class StreamChunk:
    """A text delta, or (with `done`) the closing chunk carrying usage."""

    delta: str = ""
    done: bool = False
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class UpstreamModel:
    id: str
    owned_by: str | None = None
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class LLMClient(Protocol):
    service: str

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


@asynccontextmanager
async def upstream_call(name: str) -> AsyncIterator[None]:
    """Maps transport failures of one upstream call to the API's errors."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        raise UpstreamUnavailable(f"{name} is unreachable: {error or type(error).__name__}") from None
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{name} did not answer in time") from None
    except httpx.TransportError as error:
        raise UpstreamUnavailable(f"{name} connection failed: {type(error).__name__}") from None


async def _raise_for_status(response: httpx.Response, name: str) -> None:
    if response.status_code < 400:
        return
    body = await response.aread()
    message = upstream_message(body, f"HTTP {response.status_code}")
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
        async with upstream_call(self.name):
            response = await http.post(
                f"{self.base_url}/v1/chat/completions", json=self._payload(request, False)
            )
            await _raise_for_status(response, self.name)
        body = _json(response, self.name)
        try:
            choice = body["choices"][0]
            content = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"{self.name} answered without choices[0].message") from None
        usage = body.get("usage") or {}
        return Completion(
            content=content,
            usage=Usage(
                _int_or_none(usage.get("prompt_tokens")), _int_or_none(usage.get("completion_tokens"))
            ),
            finish_reason=choice.get("finish_reason"),
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        http = await http_holder.get()
        usage: Usage | None = None
        finish_reason: str | None = None
        async with upstream_call(self.name), http.stream(
            "POST", f"{self.base_url}/v1/chat/completions", json=self._payload(request, True)
        ) as response:
            await _raise_for_status(response, self.name)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    raise UpstreamError(f"{self.name} streamed an unreadable event") from None
                if "error" in event:
                    raise UpstreamError(f"{self.name} failed mid-stream: "
                                        f"{upstream_message(data.encode(), 'unknown error')}")
                if event.get("usage"):
                    raw = event["usage"]
                    usage = Usage(_int_or_none(raw.get("prompt_tokens")),
                                  _int_or_none(raw.get("completion_tokens")))
                for choice in event.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        yield StreamChunk(delta=delta)
                    finish_reason = choice.get("finish_reason") or finish_reason
        yield StreamChunk(done=True, usage=usage, finish_reason=finish_reason)


class OllamaClient:
    """Ollama's `/api/chat` (NDJSON when streaming) and `/api/tags`."""

    service = "ollama"
    name = "LLM upstream (Ollama)"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _payload(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": stream,
            "options": {"temperature": request.temperature, "num_predict": request.max_tokens},
        }

    @staticmethod
    def _usage(body: dict[str, Any]) -> Usage:
        return Usage(_int_or_none(body.get("prompt_eval_count")),
                     _int_or_none(body.get("eval_count")))

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
        async with upstream_call(self.name):
            response = await http.post(f"{self.base_url}/api/chat",
                                       json=self._payload(request, False))
            await _raise_for_status(response, self.name)
        body = _json(response, self.name)
        try:
            content = body["message"]["content"] or ""
        except (KeyError, TypeError):
            raise UpstreamError(f"{self.name} answered without message.content") from None
        return Completion(content=content, usage=self._usage(body),
                          finish_reason=body.get("done_reason"))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        http = await http_holder.get()
        async with upstream_call(self.name), http.stream(
            "POST", f"{self.base_url}/api/chat", json=self._payload(request, True)
        ) as response:
            await _raise_for_status(response, self.name)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise UpstreamError(f"{self.name} streamed an unreadable line") from None
                if event.get("error"):
                    raise UpstreamError(f"{self.name} failed mid-stream: {event['error']}")
                delta = (event.get("message") or {}).get("content")
                if delta:
                    yield StreamChunk(delta=delta)
                if event.get("done"):
                    yield StreamChunk(done=True, usage=self._usage(event),
                                      finish_reason=event.get("done_reason"))
                    return
        raise UpstreamError(f"{self.name} ended the stream without a done line")


def llm_client(settings: Settings | None = None) -> LLMClient:
    settings = settings or get_settings()
    if not settings.llm_base_url:
        raise NotConfigured("no LLM upstream: set LLM_BASE_URL (the local runner embeds one)")
    if settings.llm_service == "ollama":
        return OllamaClient(settings.llm_base_url)
    return OpenAICompatibleClient(settings.llm_base_url)

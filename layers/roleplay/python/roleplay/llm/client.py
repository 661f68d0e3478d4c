"""The client for the LLM on Server A, whichever its dialect (`llm.dialect`: vLLM or any
OpenAI-compatible server, or Ollama; `LLM_SERVICE` picks one).

One `UpstreamClient` per base URL sends the dialect's chat request and reads its answer
through the shared pooled HTTP client (`llm.wire`), under the GPU lease; `llm_client`
puts the configured upstreams behind failover. Every upstream failure is one of the
API's errors: unreachable → 502 `upstream_unavailable`, too slow → 504, an error answer →
502 carrying the upstream's own message. An answer of the wrong shape (not JSON, not an
object, text that is not a string, a stream with no events) is a 502 `upstream_error`
too, never a 500 or an empty reply; a malformed `usage` is only ignored, since local
estimates stand in for it.

The answers' types and the transport live in `llm.wire` and are importable from here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from roleplay.core.errors import NotConfigured
from roleplay.core.http_pool import post_json, stream_json
from roleplay.core.settings import Settings, get_settings
from roleplay.gpu.coordinator import gpu_lease
from roleplay.llm.answers import Completion, StreamChunk, UpstreamModel, Usage
from roleplay.llm.chat_message import ChatMessage
from roleplay.llm.dialect import UpstreamDialect, upstream_dialect
from roleplay.llm.sampling import Sampling
from roleplay.llm.wire import (
    ContextOverflow,
    context_overflow,
    http_holder,
    raise_for_status,
    read_json,
    upstream_call,
    upstream_message,
)
from roleplay.ops.failover import base_urls, with_failover

__all__ = [
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ContextOverflow",
    "FailoverLLMClient",
    "LLMClient",
    "StreamChunk",
    "UpstreamClient",
    "UpstreamModel",
    "Usage",
    "context_overflow",
    "http_holder",
    "llm_client",
    "upstream_call",
    "upstream_message",
]


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[ChatMessage]
    sampling: Sampling = field(default_factory=Sampling)
    context_tokens: int | None = None
    """The context the prompt was planned for: Ollama's `num_ctx` (one value per model)."""


class LLMClient(Protocol):
    service: str
    base_url: str

    async def list_models(self) -> list[UpstreamModel]: ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]: ...


class UpstreamClient:
    """One upstream at `base_url`, spoken to in `dialect`."""

    def __init__(self, dialect: UpstreamDialect, base_url: str) -> None:
        self.dialect = dialect
        self.service = dialect.service
        self.name = dialect.name
        self.base_url = base_url.rstrip("/").removesuffix("/v1")

    async def list_models(self) -> list[UpstreamModel]:
        http = await http_holder.get()
        async with upstream_call(self.name):
            response = await http.get(f"{self.base_url}{self.dialect.models_path}")
            await raise_for_status(response, self.name)
        return self.dialect.models(read_json(response, self.name))

    async def complete(self, request: CompletionRequest) -> Completion:
        http = await http_holder.get()
        async with gpu_lease("llm"), upstream_call(self.name):
            response = await post_json(http, f"{self.base_url}{self.dialect.chat_path}",
                                       self.dialect.payload(request, False))
            await raise_for_status(response, self.name)
        return self.dialect.completion(read_json(response, self.name))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        http = await http_holder.get()
        closing: StreamChunk | None = None
        async with gpu_lease("llm"), upstream_call(self.name), stream_json(
            http, f"{self.base_url}{self.dialect.chat_path}", self.dialect.payload(request, True)
        ) as response:
            await raise_for_status(response, self.name)
            async with aclosing(self.dialect.stream_chunks(response.aiter_lines())) as chunks:
                async for chunk in chunks:
                    if chunk.done:
                        closing = chunk
                    else:
                        yield chunk
        assert closing is not None, "a dialect's stream ends with a done chunk, or raises"
        yield closing  # after the GPU lease ends: a switch to speech need not wait for the caller


class FailoverLLMClient:
    """The configured upstreams behind one client: each call goes through
    `ops.failover` (retry before the first byte, breakers); a stream fails over only
    until its first chunk has arrived."""

    def __init__(self, clients: list[UpstreamClient]) -> None:
        self.clients = {client.base_url: client for client in clients}
        self.primary = clients[0]
        self.dialect = self.primary.dialect
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
    dialect = upstream_dialect(settings)
    return FailoverLLMClient([UpstreamClient(dialect, url) for url in urls])

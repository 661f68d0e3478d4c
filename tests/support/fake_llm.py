"""A scripted OpenAI-compatible upstream for the context tests, served over real HTTP.

The real model (SmolLM2 on llama.cpp) proves the path end to end; this one makes the
cases that need control deterministic: a tokenizer that differs from cl100k by a
known ratio, summaries that fail or wait on a gate, and a record of every prompt.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from roleplay.chat.summarizer import _INSTRUCTIONS
from roleplay.core.token_counter import count_tokens, message_tokens


@dataclass
class FakeLLM:
    ratio: float = 1.3
    """The upstream's tokens per cl100k token: what `usage.prompt_tokens` reveals."""
    reply: str = "응, 듣고 있어."
    fail_summaries: bool = False
    reply_delay_s: float = 0.0
    token_delay_s: float = 0.0
    """Between streamed words: how fast the model speaks."""
    summary_delay_s: float = 0.0
    gate: threading.Event | None = None
    """When set, summary requests wait for it: a summary that is still running."""
    stream_gate: threading.Event | None = None
    """When set, a streamed reply holds after `stream_hold_after_words` words until it is set
    (10 s at most): a model still writing while the client watches."""
    stream_hold_after_words: int = 0
    chat_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    summary_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    summary_started: threading.Event = field(default_factory=threading.Event)

    def true_tokens(self, messages: list[dict[str, str]]) -> int:
        """The prompt's size in this upstream's own tokens."""
        return round(sum(message_tokens(m["content"]) for m in messages) * self.ratio)

    @staticmethod
    def is_summary(messages: list[dict[str, str]]) -> bool:
        return bool(messages) and messages[0]["content"] in _INSTRUCTIONS.values()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Any:
            body = await request.json()
            messages = body["messages"]
            if self.is_summary(messages):
                self.summary_prompts.append(messages)
                self.summary_started.set()
                if self.gate is not None:
                    await asyncio.to_thread(self.gate.wait, 30)
                await asyncio.sleep(self.summary_delay_s)
                if self.fail_summaries:
                    return JSONResponse({"object": "error", "message": "model overloaded"}, 503)
                content = f"요약 {len(self.summary_prompts)}: 민지와 사용자는 카페에서 만났다."
            else:
                self.chat_prompts.append(messages)
                content = self.reply
                if not body.get("stream"):
                    await asyncio.sleep(self.reply_delay_s
                                        + self.token_delay_s * len(content.split(" ")))
            usage = {"prompt_tokens": self.true_tokens(messages),
                     "completion_tokens": count_tokens(content)}
            if body.get("stream"):
                return StreamingResponse(self._events(content, usage), media_type="text/event-stream")
            return {"choices": [{"message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}], "usage": usage}

        return app

    async def _events(self, content: str, usage: dict[str, int]) -> AsyncIterator[str]:
        words = content.split(" ")
        for n, word in enumerate(words):
            await asyncio.sleep(self.token_delay_s)
            if self.stream_gate is not None and n == self.stream_hold_after_words:
                await asyncio.to_thread(self.stream_gate.wait, 10)
            text = word if n == len(words) - 1 else word + " "
            chunk = {"choices": [{"delta": {"content": text}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

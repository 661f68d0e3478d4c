"""A scripted OpenAI-compatible upstream that answers each turn with the tag of the
message it answers (`re msg-3`), served by the session and conversation-control tests.

Tags make every stored reply traceable to its turn; summaries echo the dialogue they
were given, so a test can see exactly what a summary was made from.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from roleplay.core.token_counter import message_tokens
from tests.support.fake_llm import FakeLLM

TAG = re.compile(r"msg-\d+")


@dataclass
class TaggedLLM:
    delay_s: float = 0.0
    """Before each reply: slow enough for turns to overlap when a test wants them to."""
    numbered: bool = False
    """Replies end in a serial (`re msg-3 #2`), so two generations for one message differ."""
    summary_context: int | None = None
    """Refuse (400, as vLLM does) a summary request whose prompt and max_tokens exceed this."""
    summary_gate: threading.Event | None = None
    """When set, summary requests wait for it: a summary still being made."""
    reply_gate: threading.Event | None = None
    """When set, chat replies wait for it: a turn held open for as long as a test needs."""
    chats: list[list[dict[str, str]]] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    summary_started: threading.Event = field(default_factory=threading.Event)
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def reply_to(self, messages: list[dict[str, str]]) -> str:
        """`re` and the newest tag among the user's messages (a continue instruction has none)."""
        tags = TAG.findall(" ".join(m["content"] for m in messages if m["role"] == "user"))
        content = f"re {tags[-1] if tags else 'nothing'}"
        return f"{content} #{next(self.serial)}" if self.numbered else content

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Any:
            body = await request.json()
            messages = body["messages"]
            if FakeLLM.is_summary(messages):
                if self.summary_context is not None:
                    size = sum(len(m["content"]) for m in messages) // 3 + body.get("max_tokens", 0)
                    if size > self.summary_context:
                        return JSONResponse({"object": "error", "code": 400, "message":
                                             "This model's maximum context length is exceeded"}, 400)
                dialogue = messages[1]["content"]
                self.summaries.append(dialogue)
                self.summary_started.set()
                if self.summary_gate is not None:
                    await asyncio.to_thread(self.summary_gate.wait, 30)
                content = "요약: " + dialogue.replace("\n", " / ")[:3000]
            else:
                self.chats.append(messages)
                self.started.set()
                content = self.reply_to(messages)
                await asyncio.sleep(self.delay_s)
                if self.reply_gate is not None:
                    await asyncio.to_thread(self.reply_gate.wait, 30)
            usage = {"prompt_tokens": sum(message_tokens(m["content"]) for m in messages),
                     "completion_tokens": 2}
            if body.get("stream"):
                return StreamingResponse(word_events(content, usage), media_type="text/event-stream")
            return {"choices": [{"message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}], "usage": usage}

        return app


async def word_events(content: str, usage: dict[str, int]) -> AsyncIterator[str]:
    """`content` streamed a word at a time, as OpenAI-compatible SSE, with usage last."""
    for n, word in enumerate(content.split(" ")):
        text = word if n == 0 else " " + word
        yield f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n"
        await asyncio.sleep(0.02)
    yield f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"

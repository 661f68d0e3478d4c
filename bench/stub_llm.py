"""An OpenAI-compatible upstream that answers at once, for overhead figures.

A raw ASGI app (no framework) with a canned reply, run in its own process, so a chat
turn's latency minus a direct call's latency is what Server B itself adds.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REPLY = "응, 나도 비 오는 날이 좋아. 따뜻한 차 한 잔 어때?"
_USAGE: dict[str, Any] = {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}
_COMPLETION = json.dumps({
    "id": "stub", "object": "chat.completion", "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                 "finish_reason": "stop"}],
    "usage": _USAGE}, ensure_ascii=False).encode()
_MODELS = json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode()


def _stream_body() -> bytes:
    words = REPLY.split(" ")
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": w if i == len(words) - 1 else w + " "},
                      "finish_reason": None}]} for i, w in enumerate(words)]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": _USAGE})
    events = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(events).encode()


_STREAM = _stream_body()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/models"):
        payload, media = _MODELS, b"application/json"
    elif b'"stream": true' in body or b'"stream":true' in body:
        payload, media = _STREAM, b"text/event-stream"
    else:
        payload, media = _COMPLETION, b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", media), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})

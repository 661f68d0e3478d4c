"""An OpenAI-compatible upstream that records every chat request's body and answers
`pong`: for tests that check what Server B sends upstream, field by field."""

from __future__ import annotations

from fastapi import FastAPI, Request


def recording_upstream(seen: list[dict], *, finish_reason: str = "stop") -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        seen.append(await request.json())
        return {"choices": [{"message": {"role": "assistant", "content": "pong"},
                             "finish_reason": finish_reason}]}

    return app

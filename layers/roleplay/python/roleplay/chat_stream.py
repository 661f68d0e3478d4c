"""A role-play turn as Server-Sent Events: text as it is generated, speech as it is made.

Events: `delta` ({content}), `audio` (one per spoken sentence, with speech on), then
`done` (the reply's figures, once it is stored and every sentence is spoken), or
`error` if the upstream fails mid-stream. A client that leaves stops the upstream
request, and what was generated is stored, marked `cut`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio

from roleplay.background_jobs import JobRunner
from roleplay.chat_models import ChatReply, ChatRequest
from roleplay.chat_service import (
    PreparedTurn,
    chat_turn_from_greeting,
    finish_turn,
    prepare_turn,
    reply_for,
)
from roleplay.context_fit import send_within_context
from roleplay.context_manager import ContextPlan
from roleplay.errors import ApiError
from roleplay.identity import User
from roleplay.llm_client import StreamChunk, llm_client
from roleplay.settings import get_settings
from roleplay.speech_pipeline import SpeechPipeline
from roleplay.voice_catalog import voice_for_character


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def open_stream(request: ChatRequest, user: User,
                      jobs: JobRunner | None = None) -> AsyncIterator[str]:
    """Prepares the turn and reaches the upstream before the first byte is sent, so
    a bad request or an unreachable upstream is a plain JSON error, not a broken stream."""
    turn = await prepare_turn(request, user)
    if turn.greeting is not None:
        reply = await chat_turn_from_greeting(turn, jobs)
        return _single_event_stream(reply)

    async def start(plan: ContextPlan) -> tuple[AsyncIterator[StreamChunk], StreamChunk]:
        chunks = llm_client().stream(replace(turn, plan=plan).completion_request())
        return chunks, await anext(chunks)

    plan, (chunks, first) = await send_within_context(turn.plan, turn.model, start)
    return _relay(replace(turn, plan=plan), first, chunks, jobs)


async def _single_event_stream(reply: ChatReply) -> AsyncIterator[str]:
    yield _sse("delta", {"content": reply.content})
    yield _sse("done", reply.model_dump(exclude={"content"}))


async def _relay(
    turn: PreparedTurn, first: StreamChunk, chunks: AsyncIterator[StreamChunk],
    jobs: JobRunner | None,
) -> AsyncIterator[str]:
    """Text deltas as they come; with speech on, an `audio` event per spoken sentence as
    soon as it is ready; then `done` once the reply is stored and every sentence spoken."""
    settings = get_settings()
    speech = (SpeechPipeline(voice_for_character(turn.voice_id),
                             streaming_mode=turn.request.tts_streaming_mode,
                             strip_directions=settings.tts_strip_directions)
              if turn.speaks else None)
    parts: list[str] = []
    closing: StreamChunk | None = None
    finished = False
    try:
        chunk: StreamChunk | None = first
        while chunk is not None:
            if chunk.done:
                closing = chunk
                break
            if chunk.delta:
                parts.append(chunk.delta)
                yield _sse("delta", {"content": chunk.delta})
                if speech is not None:
                    speech.feed(chunk.delta)
                    for spoken in speech.ready():
                        yield _sse("audio", spoken.event())
            chunk = await anext(chunks, None)
        content = "".join(parts)
        usage = closing.usage if closing else None
        with anyio.CancelScope(shield=True):
            scheduled = await finish_turn(turn, content, usage, jobs)
        finished = True
        if speech is not None:
            speech.finish()
            for spoken in [*speech.ready(), *await speech.rest()]:
                yield _sse("audio", spoken.event())
        reply = reply_for(turn, content, usage, closing.finish_reason if closing else None,
                          summary_scheduled=scheduled)
        yield _sse("done", reply.model_dump(exclude={"content"}))
    except ApiError as error:
        with anyio.CancelScope(shield=True):
            await finish_turn(turn, "".join(parts), None, None, cut=True)
        finished = True
        yield _sse("error", {"code": error.error_code, "message": error.message, "cut": True})
    finally:
        with anyio.CancelScope(shield=True):
            if speech is not None:
                await speech.aclose()
            await chunks.aclose()  # type: ignore[attr-defined]
            if not finished:
                await finish_turn(turn, "".join(parts), None, None, cut=True)

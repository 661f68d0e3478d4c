"""A role-play turn as Server-Sent Events: text as it is generated, speech as it is made.

Events: `delta` ({content}), `audio` (one per spoken sentence, with speech on), then
`done` (the whole reply and its figures, once it is stored and every sentence is
spoken), or `error` if the upstream fails mid-stream or the reply cannot be stored
(Redis down: `redis_unavailable`). A client that leaves stops the upstream request,
and what was generated is stored, marked `cut`. A retry of a turn already answered
streams the stored reply as one `delta` and `done` (with `replayed`). A generation that
runs longer than `TURN_LEASE_S` keeps its session's lease: the chunks come as a
`chat.service.HeldStream`, which renews it in the background until the relay closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import anyio

from roleplay.chat import turn_observer
from roleplay.chat.background_jobs import JobRunner
from roleplay.chat.models import ChatReply, ChatRequest
from roleplay.chat.preparation import PreparedTurn, prepare
from roleplay.chat.service import (
    chat_turn_from_greeting,
    finish_turn,
    reply_for,
    start_turn_stream,
)
from roleplay.chat.turn_starts import chat_turn_start
from roleplay.core.errors import ApiError
from roleplay.core.identity import ANONYMOUS, User
from roleplay.core.settings import get_settings
from roleplay.llm.client import StreamChunk
from roleplay.ops import quotas
from roleplay.speech.pipeline import SpeechPipeline, SpokenSentence
from roleplay.speech.voice_catalog import voice_for_character
from roleplay.web.function_app import redis_outage

logger = logging.getLogger("roleplay.chat.stream")


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def open_stream(request: ChatRequest, user: User, jobs: JobRunner | None = None, *,
                      idempotency_key: str | None = None) -> AsyncIterator[str]:
    """Prepares the turn and reaches the upstream before the first byte is sent, so
    a bad request or an unreachable upstream is a plain JSON error, not a broken stream."""
    turn = await prepare(request, user, chat_turn_start(idempotency_key))
    if isinstance(turn, ChatReply):
        return _single_event_stream(turn)
    if turn.greeting is not None:
        reply = await chat_turn_from_greeting(turn, jobs)
        return _single_event_stream(reply)
    turn, chunks, first = await start_turn_stream(turn)
    turn_observer.first_token()
    return relay(turn, first, chunks, jobs)


def _is_redis_error(error: BaseException) -> bool:
    """Checked by module, so redis is not imported here at cold start."""
    return type(error).__module__.startswith("redis")


async def _store_cut(turn: PreparedTurn, content: str) -> None:
    """Stores what was generated before the stream broke, and counts its tokens against the
    user's quota (a client that leaves just before the end still spent them); a store that
    fails is logged."""
    with anyio.CancelScope(shield=True):
        try:
            await finish_turn(turn, content, None, None, cut=True)
            usage = reply_for(turn, content, None, None).usage
            await quotas.add_tokens(turn.user or ANONYMOUS,
                                    (usage.prompt_tokens or 0) + (usage.completion_tokens or 0))
        except Exception as error:  # the stream is ending: report, never raise
            logger.warning("could not store the cut reply of session %s: %s", turn.session_id, error)


async def _observe_speech(turn: PreparedTurn, spoken: SpokenSentence) -> None:
    await turn_observer.spoken(turn.user or ANONYMOUS, spoken.duration, failed=bool(spoken.error_code))


async def _single_event_stream(reply: ChatReply) -> AsyncIterator[str]:
    yield _sse("delta", {"content": reply.content})
    yield _sse("done", reply.model_dump())


async def relay(
    turn: PreparedTurn, first: StreamChunk, chunks: AsyncIterator[StreamChunk],
    jobs: JobRunner | None,
) -> AsyncIterator[str]:
    """Text deltas as they come; with speech on, an `audio` event per spoken sentence as
    soon as it is ready (between deltas if need be); then `done` once the reply is stored
    and every sentence spoken."""
    settings = get_settings()
    speech = (SpeechPipeline(voice_for_character(turn.voice_id),
                             streaming_mode=turn.request.tts_streaming_mode,
                             strip_directions=settings.tts_strip_directions, speaker=turn.user)
              if turn.speaks else None)
    parts: list[str] = []
    closing: StreamChunk | None = None
    finished = False
    pending: asyncio.Future[StreamChunk | None] | None = None
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
            if speech is None:
                chunk = await anext(chunks, None)
                continue
            # Speech that is ready goes out at once, not with the next delta (up to a token later).
            pending = asyncio.ensure_future(anext(chunks, None))
            while True:
                for spoken in speech.ready():
                    await _observe_speech(turn, spoken)
                    yield _sse("audio", spoken.event())
                if pending.done():
                    break
                waiter = asyncio.ensure_future(speech.wait_ready())
                await asyncio.wait((pending, waiter), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            chunk, pending = pending.result(), None
        content = "".join(parts)
        usage = closing.usage if closing else None
        with anyio.CancelScope(shield=True):
            finished = True
            scheduled = await finish_turn(turn, content, usage, jobs)
        if speech is not None:
            speech.finish()
            for spoken in speech.ready():
                await _observe_speech(turn, spoken)
                yield _sse("audio", spoken.event())
            async for spoken in speech.rest():
                await _observe_speech(turn, spoken)
                yield _sse("audio", spoken.event())
        reply = reply_for(turn, content, usage, closing.finish_reason if closing else None,
                          summary_scheduled=scheduled, answered_by=closing.model if closing else None)
        await turn_observer.turn_answered(turn.request, reply, turn.user or ANONYMOUS)
        yield _sse("done", reply.model_dump())
    except ApiError as error:
        if not finished:
            finished = True
            await _store_cut(turn, "".join(parts))
        yield _sse("error", {"code": error.error_code, "message": error.message, "cut": True,
                             "session_id": turn.client_session_id})
    except Exception as error:
        if not _is_redis_error(error):
            raise
        logger.warning("redis failed during the streamed turn of session %s: %s",
                       turn.session_id, error)
        outage = redis_outage(error)
        yield _sse("error", {"code": outage[0] if outage else "redis_unavailable", "cut": True,
                             "session_id": turn.client_session_id,
                             "message": "session store (Redis) failed; the reply was not stored"})
    finally:
        with anyio.CancelScope(shield=True):
            if speech is not None:
                await speech.aclose()
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            await chunks.aclose()  # type: ignore[attr-defined]
        if not finished:
            await _store_cut(turn, "".join(parts))

"""One role-play turn: prepared (`preparation`), sent to the LLM within its context, its
reply stored and spoken (`chat.stream` serves the same turn as Server-Sent Events).

The user's message is stored before the upstream is called, so an upstream failure
loses nothing and a retry completes it. The reply is stored right after the message it
answers (or in place, for regenerate and continue), or dropped if the session was
deleted meanwhile. A turn that ends past the threshold schedules a summary off the
request path (`background_jobs`). While the upstream is called and while the reply
streams, the turn's short lease is renewed in the background (`keep_turn`), so a long
generation keeps its session and a dead process frees it within `TURN_LEASE_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from roleplay.chat import turn_observer
from roleplay.chat.background_jobs import JobRunner, SpeechJob, SummaryJob
from roleplay.chat.context_fit import send_within_context
from roleplay.chat.context_manager import ContextManager, ContextPlan
from roleplay.chat.models import ChatReply, ChatRequest, ChatUsage, TtsError
from roleplay.chat.preparation import (
    AppendTurn,
    PreparedTurn,
    abandon_turn,
    limiter,
    prepare,
    sessions,
    stored,
)
from roleplay.chat.token_ratio import corrected, fold_prompt_tokens
from roleplay.chat.turn_starts import chat_turn_start
from roleplay.core.errors import ApiError
from roleplay.core.identity import ANONYMOUS, User
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import count_tokens
from roleplay.llm.client import Completion, CompletionRequest, StreamChunk, Usage, llm_client
from roleplay.sessions import conversation_index
from roleplay.sessions.turn import LeaseKeeper
from roleplay.speech import tts_service
from roleplay.speech.text import spoken_text
from roleplay.speech.voice_catalog import voice_for_character

__all__ = ["AppendTurn", "PreparedTurn", "limiter", "prepare", "sessions"]


def _usage(turn: PreparedTurn, content: str, usage: Usage | None) -> ChatUsage:
    """The upstream's counts when it gave them, else local estimates, marked `estimated`."""
    usage = usage or Usage()
    prompt = usage.prompt_tokens
    if prompt is None:
        prompt = turn.plan.prompt_tokens
    completion = usage.completion_tokens
    if completion is None:
        completion = count_tokens(content)
    estimated = usage.prompt_tokens is None or usage.completion_tokens is None
    return ChatUsage(prompt_tokens=prompt, completion_tokens=completion, estimated=estimated)


def keep_turn(turn: PreparedTurn) -> LeaseKeeper:
    """The turn's hold on its session, renewed in the background while its reply is being
    generated (a long generation outlives the short `TURN_LEASE_S`)."""
    return LeaseKeeper(sessions, turn.claim.lease)


class HeldStream:
    """A turn's streamed reply that keeps the turn's lease while it is read: renewed until
    it is closed, or until nobody has read it for `LLM_READ_TIMEOUT_S` (a consumer gone
    without closing it). Closing it closes the upstream stream."""

    def __init__(self, chunks: AsyncIterator[StreamChunk], keeper: LeaseKeeper) -> None:
        self.chunks = chunks
        self.keeper = keeper
        keeper.watch_idle(get_settings().llm_read_timeout_s)

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> StreamChunk:
        with self.keeper.reading():
            return await anext(self.chunks)

    async def aclose(self) -> None:
        self.keeper.stop()
        await self.chunks.aclose()  # type: ignore[attr-defined]


async def finish_turn(
    turn: PreparedTurn, content: str, usage: Usage | None, jobs: JobRunner | None,
    *, cut: bool = False,
) -> bool:
    """Stores the reply (ending the turn), learns the token ratio, and schedules a summary
    when one is due; answers whether it scheduled one."""
    if not (content or cut):
        await sessions.end_turn(turn.claim.lease)
        return False
    reply = stored("assistant", content, id=turn.reply_id, cut=cut,
                    greeting=not turn.request.messages)
    upstream_prompt = usage.prompt_tokens if usage is not None else None
    store = (turn.store(turn, reply) if turn.store
             else sessions.append_reply(turn.claim.lease, reply, turn.recalled))
    # The ratio's and the list's writes are due once in a while: most turns await the
    # store alone, with no task; otherwise the writes go side by side, one wait.
    others = [write for write in (
        fold_prompt_tokens(turn.model, turn.plan.local_tokens, upstream_prompt),
        _listed(turn, reply.at)) if write is not None]
    length = (await asyncio.gather(store, *others))[0] if others else await store
    turn.reply_stored = length > 0
    if jobs is None or not length:
        return False
    settings = get_settings()
    context = ContextManager(settings)
    planned = turn.plan.inputs is not None and turn.plan.inputs.window is turn.window
    window_local = (turn.plan.window_local_tokens if planned
                    else context.window_tokens(turn.window.messages))
    history = corrected(window_local + reply.tokens, turn.ratio)
    backing_off = turn.window.summarizing or (
        turn.summary_failed_at is not None
        and time.time() - turn.summary_failed_at < settings.summary_retry_after_s)
    due = not backing_off and context.needs_summary(
        history_tokens=history, budget=turn.plan.history_budget, length=length,
        watermark=turn.window.watermark)
    if due:
        await jobs.submit(SummaryJob(session_id=turn.session_id))
    return due


def _listed(turn: PreparedTurn, at: float) -> Coroutine[Any, Any, None] | None:
    """The conversation goes to the top of its user's list, and its idle clock restarts:
    the write, when one is due (`conversation_index.touch_due`)."""
    user = turn.user
    if user is None or not conversation_index.touch_due(user.id, turn.client_session_id):
        return None
    window = turn.window  # titled by the conversation's first user message, when the turn read it
    first = next((m.content for m in window.messages if m.role == "user"), None) \
        if window.first_index == 0 else None
    return conversation_index.touch(user.id, turn.client_session_id, turn.session_id, at=at,
                                    character_id=turn.character_id, first_user_message=first)


@dataclass(frozen=True)
class Speech:
    audio_url: str | None = None
    error: TtsError | None = None


async def speak_reply(turn: PreparedTurn, content: str, jobs: JobRunner | None) -> Speech:
    """The reply's audio per `tts_mode`; a failure is reported, never raised."""
    if not turn.speaks:
        return Speech()
    text = spoken_text(content, strip_directions=get_settings().tts_strip_directions)
    if not text:
        return Speech()
    voice = voice_for_character(turn.voice_id)
    mode = turn.request.tts_streaming_mode
    try:
        if turn.request.tts_mode == "delayed" and jobs is not None:
            file_id, url = await tts_service.reserve(turn.user)
            await jobs.submit(SpeechJob(file_id=file_id, text=text, voice_id=voice.id,
                                        streaming_mode=mode))
            return Speech(audio_url=url)
        spoken = await tts_service.speak(text, voice, streaming_mode=mode, speaker=turn.user)
    except ApiError as error:
        await turn_observer.spoken(turn.user or ANONYMOUS, None, failed=True)
        return Speech(error=TtsError(code=error.error_code, message=error.message))
    await turn_observer.spoken(turn.user or ANONYMOUS, spoken.duration)
    return Speech(audio_url=spoken.audio_url)


def reply_for(turn: PreparedTurn, content: str, usage: Usage | None, finish_reason: str | None,
              *, summary_scheduled: bool = False, speech: Speech | None = None,
              answered_by: str | None = None) -> ChatReply:
    """`answered_by`: the model the upstream says answered, which may not be the one asked for."""
    speech = speech or Speech()
    return ChatReply(
        content=content, usage=_usage(turn, content, usage), session_id=turn.client_session_id,
        model=answered_by or turn.model, audio_url=speech.audio_url, tts_error=speech.error,
        context_summarized=turn.plan.context_summarized,
        dropped_messages=turn.plan.dropped_messages, summary_scheduled=summary_scheduled,
        finish_reason=finish_reason, message_id=turn.reply_id if turn.reply_stored else None,
        user_message_id=turn.user_message_id, alternatives=turn.alternatives,
        memories_recalled=turn.recalled or None)


def _upstream_request(turn: PreparedTurn, plan: ContextPlan) -> CompletionRequest:
    return replace(turn, plan=plan).completion_request()


async def complete_turn(turn: PreparedTurn) -> tuple[PreparedTurn, Completion]:
    """The turn's reply from the upstream, sent within its context (`send_within_context`:
    a refusal as too long is planned again and resent once); a failure releases the turn.
    Answers the turn as it was finally planned."""
    try:
        async with keep_turn(turn):
            plan, completion = await send_within_context(
                turn.plan, turn.model,
                lambda plan: llm_client().complete(_upstream_request(turn, plan)))
    except BaseException:
        await abandon_turn(turn.claim)
        raise
    return replace(turn, plan=plan), completion


async def start_turn_stream(
    turn: PreparedTurn,
) -> tuple[PreparedTurn, AsyncIterator[StreamChunk], StreamChunk]:
    """`complete_turn` streamed: the upstream is reached and its first chunk read before
    the caller sends a byte, so a refusal is planned again and resent, and any other
    failure is a plain error (the turn released), not a broken stream. The chunks come
    as a `HeldStream`, which keeps the turn's lease until the caller closes it."""
    async def start(plan: ContextPlan) -> tuple[AsyncIterator[StreamChunk], StreamChunk]:
        chunks = llm_client().stream(_upstream_request(turn, plan))
        return chunks, await anext(chunks)

    keeper = keep_turn(turn).start()
    try:
        plan, (chunks, first) = await send_within_context(turn.plan, turn.model, start)
    except BaseException:
        keeper.stop()
        await abandon_turn(turn.claim)
        raise
    return replace(turn, plan=plan), HeldStream(chunks, keeper), first


async def chat_turn(request: ChatRequest, user: User, jobs: JobRunner | None = None, *,
                    idempotency_key: str | None = None) -> ChatReply:
    turn = await prepare(request, user, chat_turn_start(idempotency_key))
    if isinstance(turn, ChatReply):
        return turn
    if turn.greeting is not None:
        return await chat_turn_from_greeting(turn, jobs)
    turn, completion = await complete_turn(turn)
    scheduled = await finish_turn(turn, completion.content, completion.usage, jobs)
    speech = await speak_reply(turn, completion.content, jobs)
    reply = reply_for(turn, completion.content, completion.usage, completion.finish_reason,
                      summary_scheduled=scheduled, speech=speech, answered_by=completion.model)
    await turn_observer.turn_answered(request, reply, user)
    return reply


async def chat_turn_from_greeting(turn: PreparedTurn, jobs: JobRunner | None) -> ChatReply:
    """The character's stored opening line: no LLM call, no tokens."""
    assert turn.greeting is not None
    await finish_turn(turn, turn.greeting, None, None)
    speech = await speak_reply(turn, turn.greeting, jobs)
    return ChatReply(content=turn.greeting, usage=ChatUsage(prompt_tokens=0, completion_tokens=0),
                     session_id=turn.client_session_id, model=turn.model, audio_url=speech.audio_url,
                     tts_error=speech.error, finish_reason="stored",
                     message_id=turn.reply_id if turn.reply_stored else None,
                     greetings=turn.greetings or None, greeting_index=turn.request.greeting_index or 0)

"""One role-play turn: store what the user said, ask the LLM in persona, store the reply
(`chat_stream` serves the same turn as Server-Sent Events).

The user's turn is stored before the upstream is called, so an upstream failure loses
nothing and a retry (which the session store de-duplicates) picks up where it failed.
The prompt is planned within the token budget from the window after the summary's
watermark; a turn that ends past the threshold schedules a summary off the request
path (`background_jobs`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace

from roleplay import character_service, tts_service
from roleplay.background_jobs import JobRunner, SpeechJob, SummaryJob
from roleplay.characters import Character, Scenario
from roleplay.chat_models import (
    ChatReply,
    ChatRequest,
    ChatUsage,
    TtsError,
)
from roleplay.concurrent_user_limiter import ConcurrentUserLimiter, occupant_id
from roleplay.context_fit import fit_context, send_within_context
from roleplay.context_manager import ContextManager, ContextPlan
from roleplay.errors import ApiError, BadRequest, Conflict
from roleplay.identity import User
from roleplay.llm_client import CompletionRequest, Usage, llm_client
from roleplay.persona import RoleplaySetup, format_persona_for_roleplay
from roleplay.session_service import ensure_session_owner
from roleplay.session_store import SessionMeta, SessionStore, StoredMessage, Window, now
from roleplay.settings import Settings, get_settings
from roleplay.speech_text import spoken_text
from roleplay.summarizer import Summarizer
from roleplay.token_counter import count_tokens, message_tokens
from roleplay.token_ratio import corrected, observe_prompt_tokens
from roleplay.voice_catalog import voice_for_character

sessions = SessionStore()
limiter = ConcurrentUserLimiter()


@dataclass(frozen=True)
class PreparedTurn:
    """A turn whose user messages are stored and whose prompt is ready to send."""

    session_id: str
    model: str
    request: ChatRequest
    window: Window
    plan: ContextPlan
    ratio: float
    summary_failed_at: float | None = None
    greeting: str | None = None
    voice_id: str | None = None

    @property
    def speaks(self) -> bool:
        """Whether this reply is synthesized now (`on_click` leaves it to the client)."""
        return self.request.tts_enabled and self.request.tts_mode != "on_click"

    def completion_request(self) -> CompletionRequest:
        return CompletionRequest(model=self.model, messages=self.plan.prompt,
                                 temperature=self.request.temperature,
                                 max_tokens=self.request.max_tokens,
                                 context_tokens=self.plan.context_tokens)


def _stored_greeting(character: Character) -> str | None:
    if character.first_message.strip():
        return character.first_message.strip()
    for line in character.sample_dialogue.splitlines():
        line = line.strip()
        if line:
            speaker, sep, said = line.partition(":")
            return said.strip() if sep and speaker.strip() == character.name else line
    return None


def _stored(role: str, content: str, **flags: bool) -> StoredMessage:
    return StoredMessage.model_validate(
        {"role": role, "content": content, "at": now(), "tokens": message_tokens(content), **flags})


async def _append_request(
    request: ChatRequest, session_id: str, meta: SessionMeta | None, character: Character | None,
    settings: Settings,
) -> tuple[Window, str | None]:
    """Stores the request's turns; with none, finds the character's opening line instead."""
    if not request.messages:
        if character is None:
            raise BadRequest("messages is empty: send a message, or a character_id for its opening",
                             code="empty_conversation")
        window = await sessions.read_window(session_id)
        if window.length:
            raise BadRequest("messages is empty: this session has already begun",
                             code="empty_conversation")
        return window, _stored_greeting(character)
    new_user_turns = any(m.role == "user" for m in request.messages)
    if settings.max_turns and new_user_turns and meta and meta.user_turns >= settings.max_turns:
        raise Conflict(f"this conversation reached its limit of {settings.max_turns} turns; "
                       "start a new session", code="turn_limit_reached")
    window = await sessions.append_turns(
        session_id, [_stored(m.role, m.content) for m in request.messages])
    return window, None


async def prepare_turn(request: ChatRequest, user: User) -> PreparedTurn:
    settings = get_settings()
    session_id = request.session_id or uuid.uuid4().hex
    meta = await sessions.load_meta(session_id)
    ensure_session_owner(meta, user)
    await limiter.ensure_admitted(occupant_id(user, session_id))
    character_id = request.character_id or (meta.character_id if meta else None)
    character = await character_service.get_character(character_id) if character_id else None
    persona = request.persona or (meta.persona if meta else None)
    scenario = request.scenario or (Scenario.model_validate(meta.scenario)
                                    if meta and meta.scenario else None)
    scenario_fields = scenario.model_dump(exclude_none=True) if scenario else None
    if meta is None or (character_id, persona, scenario_fields) != (
            meta.character_id, meta.persona, meta.scenario):
        await sessions.save_setup(session_id, owner=user.id, character_id=character_id,
                                  persona=persona, scenario=scenario_fields)
    window, greeting = await _append_request(request, session_id, meta, character, settings)

    setup = RoleplaySetup.merge(character, persona, scenario)
    language = settings.persona_language
    persona_text = format_persona_for_roleplay(setup, language)
    model = request.model or settings.default_model

    async def summarize_now() -> Window | None:
        summarized = await Summarizer(sessions).summarize(session_id, max_passes=1)
        return await sessions.read_window(session_id) if summarized.outcome == "summarized" else None

    window, plan, ratio = await fit_context(
        window, model=model, persona=persona_text, max_tokens=request.max_tokens,
        character_name=setup.name, language=language,
        summarize=summarize_now if greeting is None else None)
    return PreparedTurn(session_id=session_id, model=model, request=request, window=window,
                        plan=plan, ratio=ratio,
                        summary_failed_at=meta.summary_failed_at if meta else None,
                        greeting=greeting, voice_id=character.voice_id if character else None)


def _usage(turn: PreparedTurn, content: str, usage: Usage | None) -> ChatUsage:
    """The upstream's counts when it gave them, else local estimates."""
    usage = usage or Usage()
    prompt = usage.prompt_tokens
    if prompt is None:
        prompt = turn.plan.prompt_tokens
    completion = usage.completion_tokens
    if completion is None:
        completion = count_tokens(content)
    return ChatUsage(prompt_tokens=prompt, completion_tokens=completion)


async def finish_turn(
    turn: PreparedTurn, content: str, usage: Usage | None, jobs: JobRunner | None,
    *, cut: bool = False,
) -> bool:
    """Stores the reply, learns the token ratio, and schedules a summary when one is due;
    answers whether it scheduled one."""
    if not (content or cut):
        return False
    reply = _stored("assistant", content, cut=cut, greeting=not turn.request.messages)
    upstream_prompt = usage.prompt_tokens if usage is not None else None
    length, _ = await asyncio.gather(  # two keys, two round trips, one wait
        sessions.append_reply(turn.session_id, reply),
        observe_prompt_tokens(turn.model, turn.plan.local_tokens, upstream_prompt))
    if jobs is None:
        return False
    settings = get_settings()
    context = ContextManager(settings)
    history = corrected(context.window_tokens(turn.window.messages) + reply.tokens, turn.ratio)
    backing_off = turn.window.summarizing or (
        turn.summary_failed_at is not None
        and time.time() - turn.summary_failed_at < settings.summary_retry_after_s)
    due = not backing_off and context.needs_summary(
        history_tokens=history, budget=turn.plan.history_budget, length=length,
        watermark=turn.window.watermark)
    if due:
        await jobs.submit(SummaryJob(session_id=turn.session_id))
    return due


@dataclass(frozen=True)
class Speech:
    audio_url: str | None = None
    error: TtsError | None = None


async def _speech(turn: PreparedTurn, content: str, jobs: JobRunner | None) -> Speech:
    """The reply's audio per `tts_mode`; a failure is reported, never raised."""
    settings = get_settings()
    text = spoken_text(content, strip_directions=settings.tts_strip_directions)
    if not turn.speaks or not text:
        return Speech()
    voice = voice_for_character(turn.voice_id)
    mode = turn.request.tts_streaming_mode
    try:
        if turn.request.tts_mode == "delayed" and jobs is not None:
            file_id, url = await tts_service.reserve()
            await jobs.submit(SpeechJob(file_id=file_id, text=text, voice_id=voice.id,
                                        streaming_mode=mode))
            return Speech(audio_url=url)
        return Speech(audio_url=(await tts_service.speak(text, voice, streaming_mode=mode)).audio_url)
    except ApiError as error:
        return Speech(error=TtsError(code=error.error_code, message=error.message))


def reply_for(turn: PreparedTurn, content: str, usage: Usage | None, finish_reason: str | None,
              *, summary_scheduled: bool = False, speech: Speech | None = None) -> ChatReply:
    speech = speech or Speech()
    return ChatReply(
        content=content, usage=_usage(turn, content, usage), session_id=turn.session_id,
        model=turn.model, audio_url=speech.audio_url, tts_error=speech.error,
        context_summarized=turn.plan.context_summarized,
        dropped_messages=turn.plan.dropped_messages, summary_scheduled=summary_scheduled,
        finish_reason=finish_reason)


async def chat_turn(request: ChatRequest, user: User,
                    jobs: JobRunner | None = None) -> ChatReply:
    turn = await prepare_turn(request, user)
    if turn.greeting is not None:
        return await chat_turn_from_greeting(turn, jobs)
    plan, completion = await send_within_context(
        turn.plan, turn.model,
        lambda plan: llm_client().complete(replace(turn, plan=plan).completion_request()))
    turn = replace(turn, plan=plan)
    scheduled = await finish_turn(turn, completion.content, completion.usage, jobs)
    speech = await _speech(turn, completion.content, jobs)
    return reply_for(turn, completion.content, completion.usage, completion.finish_reason,
                     summary_scheduled=scheduled, speech=speech)


async def chat_turn_from_greeting(turn: PreparedTurn, jobs: JobRunner | None) -> ChatReply:
    """The character's stored opening line: no LLM call, no tokens."""
    assert turn.greeting is not None
    await finish_turn(turn, turn.greeting, None, None)
    speech = await _speech(turn, turn.greeting, jobs)
    return ChatReply(content=turn.greeting, usage=ChatUsage(prompt_tokens=0, completion_tokens=0),
                     session_id=turn.session_id, model=turn.model, audio_url=speech.audio_url,
                     tts_error=speech.error, finish_reason="stored")

"""One role-play turn: check it, begin it under the session's lease, ask the LLM in
persona, store the reply (`chat_stream` serves the same turn as Server-Sent Events).

Every check that can refuse a turn (quota, model, character, budget, message length,
the user cap) runs before anything is written. The turn then begins under its
session's lease (`session_turn`): one turn at a time per session, a retry gets the
reply already stored, a re-sent history is aligned with the stored one. The user's
message is stored before the upstream is called, so an upstream failure loses nothing
and a retry completes it; but a first turn (no `session_id`) that fails is removed
whole, with the slot it took, since its client never learned the session's id. The
reply is stored right after the message it answers, or dropped if the session was
deleted meanwhile. The prompt is planned within the token budget from the window after
the summary's watermark; a turn that ends past the threshold schedules a summary off
the request path (`background_jobs`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import anyio

from roleplay.characters import service as character_service
from roleplay.characters.greetings import greetings_of, pick_greeting
from roleplay.characters.lorebook.fired_store import save_fired
from roleplay.characters.model import Scenario
from roleplay.characters.persona import RoleplaySetup
from roleplay.characters.user_persona import persona_from, persona_keys
from roleplay.chat import turn_observer
from roleplay.chat.background_jobs import JobRunner, SpeechJob, SummaryJob
from roleplay.chat.context_fit import fit_context, send_within_context
from roleplay.chat.context_manager import ContextManager, ContextPlan
from roleplay.chat.control.pins import with_pins
from roleplay.chat.lore_prompt import persona_with_lore
from roleplay.chat.models import (
    ChatReply,
    ChatRequest,
    ChatUsage,
    ReplyAlternative,
    TtsError,
)
from roleplay.chat.session_service import ensure_session_owner
from roleplay.chat.summarizer import Summarizer
from roleplay.chat.token_ratio import corrected, observe_prompt_tokens, token_ratio
from roleplay.core.errors import ApiError, BadRequest
from roleplay.core.identity import ANONYMOUS, User
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import count_tokens, message_tokens
from roleplay.llm.client import Completion, CompletionRequest, StreamChunk, Usage, llm_client
from roleplay.llm.served_models import checked_model
from roleplay.ops import quotas
from roleplay.sessions.concurrent_user_limiter import ConcurrentUserLimiter, occupant_id
from roleplay.sessions.scope import owned_session_and
from roleplay.sessions.store import (
    Replay,
    SessionStore,
    StoredMessage,
    Turn,
    TurnSetup,
    Window,
    new_message_id,
    now,
)
from roleplay.sessions.turn import begin_turn
from roleplay.speech import tts_service
from roleplay.speech.text import spoken_text
from roleplay.speech.voice_catalog import voice_for_character

sessions = SessionStore()
limiter = ConcurrentUserLimiter()


@dataclass(frozen=True)
class TurnClaim:
    """What a begun turn holds: the session's lease, and whether it made the session and
    took the user's slot (both given back if the turn fails)."""

    lease: Turn
    new_session: bool
    occupant: str
    slot_taken: bool


@dataclass
class PreparedTurn:
    """A turn whose user messages are stored and whose prompt is ready to send."""

    session_id: str
    """The session store's id (`session_scope`): what every stored read and write uses."""
    client_session_id: str
    """The id the client names the session by: what answers carry."""
    model: str
    request: ChatRequest
    window: Window
    plan: ContextPlan
    ratio: float
    claim: TurnClaim
    summary_failed_at: float | None = None
    greeting: str | None = None
    voice_id: str | None = None
    user: User | None = None
    greetings: list[str] | None = None
    reply_id: str = field(default_factory=new_message_id)
    reply_stored: bool = False
    store: Callable[[PreparedTurn, StoredMessage], Awaitable[int]] | None = None
    """Stores the reply instead of appending it (regenerate, continue: `roleplay.control`)."""
    alternatives: list[ReplyAlternative] | None = None

    @property
    def speaks(self) -> bool:
        """Whether this reply is synthesized now (`on_click` leaves it to the client)."""
        return self.request.tts_enabled and self.request.tts_mode != "on_click"

    @property
    def user_message_id(self) -> str | None:
        message = self.claim.lease.user_message
        return message.id or None if message else None

    def completion_request(self) -> CompletionRequest:
        return CompletionRequest(model=self.model, messages=self.plan.prompt,
                                 temperature=self.request.temperature,
                                 max_tokens=self.request.max_tokens,
                                 context_tokens=self.plan.context_tokens)


def _stored(role: str, content: str, **fields: object) -> StoredMessage:
    return StoredMessage.model_validate(
        {"id": new_message_id(), "role": role, "content": content, "at": now(),
         "tokens": message_tokens(content), **fields})


def _replayed(replay: Replay, session_id: str, model: str) -> ChatReply:
    """A retry's answer: the reply stored for the same turn, generated once."""
    reply = replay.reply
    return ChatReply(content=reply.content, usage=ChatUsage(prompt_tokens=0, completion_tokens=0),
                     session_id=session_id, model=model, finish_reason="stored", cut=reply.cut,
                     message_id=reply.id or None, user_message_id=replay.user_message.id or None,
                     replayed=True)


async def abandon_turn(claim: TurnClaim) -> None:
    """A turn that failed before its reply was stored. A session the client never learned
    of goes, with the slot it took; otherwise the user's message stays (a retry completes
    it) and the lease is released."""
    with anyio.CancelScope(shield=True):
        if claim.new_session:
            if await sessions.discard(claim.lease) and claim.slot_taken:
                await limiter.release(claim.occupant)
        else:
            await sessions.end_turn(claim.lease)


async def prepare_turn(request: ChatRequest, user: User, *, idempotency_key: str | None = None,
                       extra_system: str | None = None) -> PreparedTurn | ChatReply:
    """Checks the turn, then begins it; a retry of a turn already answered gets its reply.
    `extra_system`: the caller's own instructions (the OpenAI API's system messages), told
    after the persona and never stored in the transcript."""
    settings = get_settings()
    await quotas.check(user, "chat")
    model = await checked_model(request.model)
    new_session = request.session_id is None
    given = request.user_persona
    scoped, meta, stored_persona = await owned_session_and(
        user, request.session_id, sessions, persona_keys(user) if given is None else ())
    session_id = scoped.key
    ensure_session_owner(meta, user)
    character_id = request.character_id or (meta.character_id if meta else None)
    character = await character_service.get_character(character_id) if character_id else None
    persona = request.persona or (meta.persona if meta else None)
    scenario = request.scenario or (Scenario.model_validate(meta.scenario)
                                    if meta and meta.scenario else None)
    scenario_fields = scenario.model_dump(exclude_none=True) if scenario else None
    setup_changed = meta is None or (character_id, persona, scenario_fields) != (
        meta.character_id, meta.persona, meta.scenario)
    played = given if given is not None else persona_from(stored_persona)
    setup = RoleplaySetup.merge(character, persona, scenario,
                                user_name=played.name if played else None,
                                user_description=played.description if played else None)
    language = settings.persona_language
    greetings = (greetings_of(character, setup.macro_names(language))
                 if character and not request.messages else [])
    if not request.messages and character is None:
        raise BadRequest("messages is empty: send a message, or a character_id for its opening",
                         code="empty_conversation")
    greeting = pick_greeting(greetings, request.greeting_index) if not request.messages else None
    ratio = await token_ratio(model)
    context = ContextManager(settings)
    incoming = [_stored(m.role, m.content) for m in request.messages]
    plain_persona, _ = persona_with_lore(setup, None, [], language=language, settings=settings,
                                         max_tokens=request.max_tokens, ratio=ratio)
    plain_persona = with_pins(plain_persona, meta.pins if meta else [], language)
    context.check_turn(context.system_prompt(plain_persona, meta.summary if meta else None, language),
                       request.max_tokens, ratio, [m.tokens for m in incoming])
    if idempotency_key:
        users = [n for n, m in enumerate(incoming) if m.role == "user"]
        if users:
            incoming[users[-1]] = incoming[users[-1]].model_copy(update={"key": idempotency_key})

    occupant = occupant_id(user)
    admission = await limiter.ensure_admitted(user)
    try:
        begun = await begin_turn(
            sessions, session_id, incoming, client_ids=[m.id for m in request.messages],
            setup=TurnSetup(owner=user.id, character_id=character_id, persona=persona,
                            scenario=scenario_fields), setup_changed=setup_changed,
            idempotency_key=idempotency_key)
    except BaseException:
        if new_session and admission.new:
            with anyio.CancelScope(shield=True):
                await limiter.release(occupant)
        raise
    if isinstance(begun, Replay):
        return _replayed(begun, scoped.session_id, model)
    claim = TurnClaim(lease=begun, new_session=new_session, occupant=occupant,
                      slot_taken=admission.new)
    try:
        window = begun.window
        if not request.messages and window.length:
            raise BadRequest("messages is empty: this session has already begun",
                             code="empty_conversation")
        persona_text, lore = persona_with_lore(
            setup, character.character_book if character else None,
            [m.content for m in window.messages], language=language, settings=settings,
            max_tokens=request.max_tokens, ratio=ratio, summary=window.summary)
        persona_text = with_pins(persona_text, meta.pins if meta else [], language)
        if extra_system:
            persona_text = f"{persona_text}\n\n{extra_system}"
        if lore is not None and greeting is None:
            await save_fired(session_id, lore)
        failed_at = meta.summary_failed_at if meta else None
        backing_off = failed_at is not None and time.time() - failed_at < settings.summary_retry_after_s

        async def summarize_now() -> Window | None:
            nonlocal failed_at
            summarized = await Summarizer(sessions).summarize(session_id, max_passes=1)
            if summarized.outcome == "failed":
                failed_at = time.time()  # and no second try off the request path either
            return await sessions.read_window(session_id) if summarized.outcome == "summarized" else None

        if greeting is not None:  # a stored opening line: no upstream is asked anything
            plan = context.plan(window, persona=persona_text, summary=window.summary,
                                max_tokens=request.max_tokens, ratio=ratio,
                                character_name=setup.name, language=language)
        else:
            window, plan, ratio = await fit_context(
                window, model=model, persona=persona_text, max_tokens=request.max_tokens,
                character_name=setup.name, language=language,
                summarize=None if backing_off else summarize_now)
    except BaseException:
        await abandon_turn(claim)
        raise
    return PreparedTurn(session_id=session_id, client_session_id=scoped.session_id, model=model,
                        request=request, window=window, plan=plan, ratio=ratio, claim=claim,
                        summary_failed_at=failed_at, greeting=greeting,
                        voice_id=character.voice_id if character else None, user=user,
                        greetings=greetings)


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


async def keep_turn(turn: PreparedTurn) -> bool:
    """Extends the turn's hold on its session while its reply is still streaming (a long
    generation outlives `TURN_LEASE_S`); False when the hold is already lost."""
    return await sessions.renew_turn(turn.claim.lease)


async def finish_turn(
    turn: PreparedTurn, content: str, usage: Usage | None, jobs: JobRunner | None,
    *, cut: bool = False,
) -> bool:
    """Stores the reply (ending the turn), learns the token ratio, and schedules a summary
    when one is due; answers whether it scheduled one."""
    if not (content or cut):
        await sessions.end_turn(turn.claim.lease)
        return False
    reply = _stored("assistant", content, id=turn.reply_id, cut=cut,
                    greeting=not turn.request.messages)
    upstream_prompt = usage.prompt_tokens if usage is not None else None
    length, _ = await asyncio.gather(  # two keys, two round trips, one wait
        turn.store(turn, reply) if turn.store else sessions.append_reply(turn.claim.lease, reply),
        observe_prompt_tokens(turn.model, turn.plan.local_tokens, upstream_prompt))
    turn.reply_stored = length > 0
    if jobs is None or not length:
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
        spoken = await tts_service.speak(text, voice, streaming_mode=mode)
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
        user_message_id=turn.user_message_id, alternatives=turn.alternatives)


RequestShape = Callable[[CompletionRequest], CompletionRequest]
"""What a caller adds to the turn's upstream request (the OpenAI API's `top_p`, `stop`)."""


def _upstream_request(turn: PreparedTurn, plan: ContextPlan,
                      shape: RequestShape | None) -> CompletionRequest:
    request = replace(turn, plan=plan).completion_request()
    return shape(request) if shape else request


async def complete_turn(turn: PreparedTurn, shape: RequestShape | None = None,
                        ) -> tuple[PreparedTurn, Completion]:
    """The turn's reply from the upstream, sent within its context (`send_within_context`:
    a refusal as too long is planned again and resent once); a failure releases the turn.
    Answers the turn as it was finally planned."""
    try:
        plan, completion = await send_within_context(
            turn.plan, turn.model,
            lambda plan: llm_client().complete(_upstream_request(turn, plan, shape)))
    except BaseException:
        await abandon_turn(turn.claim)
        raise
    return replace(turn, plan=plan), completion


async def start_turn_stream(
    turn: PreparedTurn, shape: RequestShape | None = None,
) -> tuple[PreparedTurn, AsyncIterator[StreamChunk], StreamChunk]:
    """`complete_turn` streamed: the upstream is reached and its first chunk read before
    the caller sends a byte, so a refusal is planned again and resent, and any other
    failure is a plain error (the turn released), not a broken stream."""
    async def start(plan: ContextPlan) -> tuple[AsyncIterator[StreamChunk], StreamChunk]:
        chunks = llm_client().stream(_upstream_request(turn, plan, shape))
        return chunks, await anext(chunks)

    try:
        plan, (chunks, first) = await send_within_context(turn.plan, turn.model, start)
    except BaseException:
        await abandon_turn(turn.claim)
        raise
    return replace(turn, plan=plan), chunks, first


async def chat_turn(request: ChatRequest, user: User, jobs: JobRunner | None = None, *,
                    idempotency_key: str | None = None) -> ChatReply:
    turn = await prepare_turn(request, user, idempotency_key=idempotency_key)
    if isinstance(turn, ChatReply):
        return turn
    if turn.greeting is not None:
        return await chat_turn_from_greeting(turn, jobs)
    turn, completion = await complete_turn(turn)
    scheduled = await finish_turn(turn, completion.content, completion.usage, jobs)
    speech = await _speech(turn, completion.content, jobs)
    reply = reply_for(turn, completion.content, completion.usage, completion.finish_reason,
                      summary_scheduled=scheduled, speech=speech, answered_by=completion.model)
    await turn_observer.turn_answered(request, reply, user)
    return reply


async def chat_turn_from_greeting(turn: PreparedTurn, jobs: JobRunner | None) -> ChatReply:
    """The character's stored opening line: no LLM call, no tokens."""
    assert turn.greeting is not None
    await finish_turn(turn, turn.greeting, None, None)
    speech = await _speech(turn, turn.greeting, jobs)
    return ChatReply(content=turn.greeting, usage=ChatUsage(prompt_tokens=0, completion_tokens=0),
                     session_id=turn.client_session_id, model=turn.model, audio_url=speech.audio_url,
                     tts_error=speech.error, finish_reason="stored",
                     message_id=turn.reply_id if turn.reply_stored else None,
                     greetings=turn.greetings or None, greeting_index=turn.request.greeting_index or 0)

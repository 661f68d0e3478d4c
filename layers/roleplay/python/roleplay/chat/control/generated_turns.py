"""Regenerate and continue: turns that generate a reply under the session's lease, like
`/api/chat`, but store it in place of the last reply instead of appending.

Both reuse the chat turn's machinery (`PreparedTurn`, `finish_turn`, the SSE relay,
speech per `tts_mode`) with a `store` hook: the reply goes into the stored message by
compare-and-set under the lease, which also releases it. Everything that can refuse
(owner, budget, what the last message is) is checked before anything is written, and
a refusal or an upstream failure releases the lease with the transcript untouched.
The prompt is planned as a chat turn's is (`context_fit`): against the upstream's real
context, counted exactly at the edge, planned again and resent once if refused as too long.

Regenerate answers the last user message again: the new text becomes a version of
the reply (the old ones stay as alternatives), or, when the last message is the
user's (its turn failed), the reply is appended. Continue asks the model to go on
from the last assistant reply (the prompt ends on a user instruction, as Gemma 3's
template requires) and stores old + new text as one message.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from roleplay.characters import service as character_service
from roleplay.characters.model import Scenario
from roleplay.characters.persona import RoleplaySetup
from roleplay.characters.user_persona import persona_for_turn
from roleplay.chat.background_jobs import JobRunner
from roleplay.chat.context_fit import budget_for, fit_context
from roleplay.chat.context_manager import ContextManager
from roleplay.chat.control.alternatives import listing, with_content, with_new_version
from roleplay.chat.control.models import GenerateRequest
from roleplay.chat.control.pins import with_pins
from roleplay.chat.lore_prompt import persona_with_lore
from roleplay.chat.models import ChatReply, ChatRequest
from roleplay.chat.service import (
    PreparedTurn,
    TurnClaim,
    _speech,
    abandon_turn,
    complete_turn,
    finish_turn,
    limiter,
    reply_for,
    start_turn_stream,
)
from roleplay.chat.session_service import ensure_session_owner
from roleplay.chat.stream import _relay
from roleplay.chat.token_ratio import token_ratio
from roleplay.core.errors import Conflict, NotFound
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import message_tokens
from roleplay.llm.served_models import checked_model
from roleplay.sessions.concurrent_user_limiter import occupant_id
from roleplay.sessions.scope import owned_session
from roleplay.sessions.store import SessionMeta, SessionStore, StoredMessage, Turn, Window, now
from roleplay.sessions.transcript_edits import Began, TranscriptEdits
from roleplay.sessions.turn_wait import when_free

Action = Literal["regenerate", "continue"]

CONTINUE_INSTRUCTION = {
    "ko": "(방금 한 말을 끊긴 곳에서 그대로 이어서 계속해 주세요. 이미 한 말은 반복하지 마세요.)",
    "en": "(Continue your last reply exactly where it stopped. Do not repeat what you already said.)",
}

sessions = SessionStore()
edits = TranscriptEdits(sessions)


async def own_session(session_id: str, user: User) -> tuple[str, SessionMeta]:
    """The session's storage key (`session_scope`: the client's id within its owner) and
    its metadata; another owner's session does not exist for the caller."""
    scoped, meta = await owned_session(user, session_id, sessions)
    if meta is None:
        raise NotFound("no such session", code="session_not_found")
    ensure_session_owner(meta, user)
    return scoped.key, meta


def joined(old: str, more: str) -> str:
    """The continued reply: a space between the two parts unless one side has it already."""
    if not old or not more or old[-1].isspace() or more[0].isspace() or more[0] in ".,!?…)」』":
        return old + more
    return f"{old} {more}"


def _with_messages(window: Window, messages: list[StoredMessage], length: int) -> Window:
    return window.model_copy(update={"messages": messages, "length": length})


Store = Callable[[PreparedTurn, StoredMessage], Awaitable[int]]


def _plan_for(action: Action, began: Began, session_id: str, token: str,
              ) -> tuple[Window, Store]:
    """What the prompt is made of and how the reply is stored; 409 when the transcript's
    end cannot take the action (the caller releases the lease, nothing changed)."""
    window = began.window
    tail = window.tail
    last = window.length - 1
    if action == "continue":
        if tail is None:
            raise Conflict("there is no reply to continue", code="nothing_to_continue")
        if tail.role != "assistant":
            raise Conflict("the last message is the user's: send a turn or regenerate instead",
                           code="last_message_is_user")
        language = get_settings().persona_language
        instruction = StoredMessage(role="user", content=CONTINUE_INSTRUCTION[language], at=now(),
                                    tokens=message_tokens(CONTINUE_INSTRUCTION[language]))
        prompt_window = _with_messages(window, [*window.messages, instruction], window.length)
        old, old_raw = tail, began.raws[-1]

        async def store_continued(turn: PreparedTurn, reply: StoredMessage) -> int:
            message = with_content(old, joined(old.content, reply.content), cut=reply.cut)
            stored = await edits.replace(session_id, last, old_raw, message, token=token,
                                         epoch=window.epoch)
            if stored is True and message.alternatives:
                turn.alternatives = listing(message)
            return window.length if stored is True else 0

        return prompt_window, store_continued

    if tail is not None and tail.role == "user":
        async def store_appended(turn: PreparedTurn, reply: StoredMessage) -> int:
            reply = reply.model_copy(update={"greeting": False})
            stored = await edits.replace(session_id, window.length, None, reply, token=token,
                                         epoch=window.epoch)
            if stored is True:
                turn.alternatives = listing(reply)
            return window.length + 1 if stored is True else 0

        return window, store_appended
    if (tail is None or len(window.messages) < 2 or window.messages[-2].role != "user"):
        raise Conflict("there is no user message with a reply to regenerate",
                       code="nothing_to_regenerate")
    previous, previous_raw = tail, began.raws[-1]

    async def store_version(turn: PreparedTurn, reply: StoredMessage) -> int:
        message = with_new_version(previous, reply)
        stored = await edits.replace(session_id, last, previous_raw, message, token=token,
                                     epoch=window.epoch)
        if stored is True:
            turn.alternatives = listing(message)
        return window.length if stored is True else 0

    return _with_messages(window, window.messages[:-1], window.length - 1), store_version


async def prepare(action: Action, client_session_id: str, body: GenerateRequest, user: User,
                  ) -> PreparedTurn:
    settings = get_settings()
    session_id, meta = await own_session(client_session_id, user)
    character = (await character_service.get_character(meta.character_id)
                 if meta.character_id else None)
    scenario = Scenario.model_validate(meta.scenario) if meta.scenario else None
    played = await persona_for_turn(None, user)
    setup = RoleplaySetup.merge(character, meta.persona, scenario,
                                user_name=played.name if played else None,
                                user_description=played.description if played else None)
    language = settings.persona_language
    model = await checked_model(body.model)
    ratio = await token_ratio(model)
    plain_persona, _ = persona_with_lore(setup, None, [], language=language, settings=settings,
                                         max_tokens=body.max_tokens, ratio=ratio)
    context = ContextManager(settings, (await budget_for(model, settings)).planning)
    context.check_turn(context.system_prompt(with_pins(plain_persona, meta.pins, language),
                                             meta.summary, language), body.max_tokens, ratio, [])
    occupant = occupant_id(user)
    await limiter.ensure_admitted(user)
    token = uuid.uuid4().hex
    began = await when_free(lambda: edits.begin(session_id, token))
    if began is None:
        raise NotFound("no such session", code="session_not_found")
    lease = Turn(session_id=session_id, token=token, window=began.window,
                 kept=began.window.length, appended=0)
    claim = TurnClaim(lease=lease, new_session=False, occupant=occupant, slot_taken=False)
    try:
        window, store = _plan_for(action, began, session_id, token)
        persona_text, _ = persona_with_lore(
            setup, character.character_book if character else None,
            [m.content for m in window.messages], language=language, settings=settings,
            max_tokens=body.max_tokens, ratio=ratio, summary=window.summary)
        persona_text = with_pins(persona_text, meta.pins, language)
        window, plan, ratio = await fit_context(
            window, model=model, persona=persona_text, max_tokens=body.max_tokens,
            character_name=setup.name, language=language, summarize=None)
    except BaseException:
        await abandon_turn(claim)
        raise
    claim = TurnClaim(lease=Turn(session_id=session_id, token=token, window=window,
                                 kept=began.window.length, appended=0),
                      new_session=False, occupant=occupant, slot_taken=False)
    request = ChatRequest(session_id=client_session_id, model=body.model, temperature=body.temperature,
                          max_tokens=body.max_tokens, stream=body.stream,
                          tts_enabled=body.tts_enabled, tts_mode=body.tts_mode,
                          tts_delay_ms=body.tts_delay_ms, tts_streaming_mode=body.tts_streaming_mode)
    turn = PreparedTurn(session_id=session_id, client_session_id=client_session_id, model=model,
                        request=request, window=window, plan=plan, ratio=ratio, claim=claim,
                        user=user,
                        summary_failed_at=meta.summary_failed_at,
                        voice_id=character.voice_id if character else None, store=store)
    if action == "regenerate" and began.window.tail is not None \
            and began.window.tail.role == "assistant":
        turn.reply_id = began.window.tail.id or turn.reply_id
    if action == "continue" and began.window.tail is not None:
        turn.reply_id = began.window.tail.id or turn.reply_id
    return turn


async def generate(action: Action, session_id: str, body: GenerateRequest, user: User,
                   jobs: JobRunner | None) -> ChatReply:
    turn, completion = await complete_turn(await prepare(action, session_id, body, user))
    scheduled = await finish_turn(turn, completion.content, completion.usage, jobs)
    speech = await _speech(turn, completion.content, jobs)
    reply = reply_for(turn, completion.content, completion.usage, completion.finish_reason,
                      summary_scheduled=scheduled, speech=speech)
    if action == "continue" and turn.reply_stored:
        stored = await edits.locate(turn.session_id, turn.reply_id)
        if stored is not None:
            reply = reply.model_copy(update={"content": stored.message.content})
    return reply


async def generate_stream(action: Action, session_id: str, body: GenerateRequest, user: User,
                          jobs: JobRunner | None) -> AsyncIterator[str]:
    """As `/api/chat` with `stream: true`: the upstream is reached before the first byte."""
    turn, chunks, first = await start_turn_stream(await prepare(action, session_id, body, user))
    return _relay(turn, first, chunks, jobs)

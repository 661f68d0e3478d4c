"""One role-play turn: store what the user said, ask the LLM in persona, store the reply.

The user's turn is stored before the upstream is called, so an upstream failure loses
nothing and a retry (which the session store de-duplicates) picks up where it failed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from roleplay import character_service
from roleplay.characters import Character, Scenario
from roleplay.chat_models import ChatReply, ChatRequest, ChatUsage, SessionEnded, SessionView
from roleplay.chat_prompt import build_prompt
from roleplay.errors import ApiError, BadRequest, Conflict, NotFound
from roleplay.identity import User
from roleplay.llm_client import ChatMessage, CompletionRequest, StreamChunk, Usage, llm_client
from roleplay.persona import RoleplaySetup, format_persona_for_roleplay
from roleplay.session_store import SessionMeta, SessionStore, StoredMessage, now
from roleplay.settings import get_settings
from roleplay.token_counter import count_tokens

sessions = SessionStore()


@dataclass(frozen=True)
class PreparedTurn:
    """A turn whose user messages are stored and whose prompt is ready to send."""

    session_id: str
    model: str
    prompt: list[ChatMessage]
    request: ChatRequest
    greeting: str | None = None

    def completion_request(self) -> CompletionRequest:
        return CompletionRequest(model=self.model, messages=self.prompt,
                                 temperature=self.request.temperature,
                                 max_tokens=self.request.max_tokens)


def _owned(meta: SessionMeta | None, user: User) -> None:
    if meta and user.authenticated and meta.owner not in (None, user.id):
        raise NotFound("no such session", code="session_not_found")


def _stored_greeting(character: Character) -> str | None:
    if character.first_message.strip():
        return character.first_message.strip()
    for line in character.sample_dialogue.splitlines():
        line = line.strip()
        if line:
            speaker, sep, said = line.partition(":")
            return said.strip() if sep and speaker.strip() == character.name else line
    return None


async def prepare_turn(request: ChatRequest, user: User) -> PreparedTurn:
    settings = get_settings()
    session_id = request.session_id or uuid.uuid4().hex
    meta = await sessions.load_meta(session_id)
    _owned(meta, user)
    character_id = request.character_id or (meta.character_id if meta else None)
    character = await character_service.get_character(character_id) if character_id else None
    persona = request.persona or (meta.persona if meta else None)
    scenario = request.scenario or (Scenario.model_validate(meta.scenario)
                                    if meta and meta.scenario else None)
    if meta is None or request.character_id or request.persona or request.scenario:
        await sessions.save_setup(
            session_id, owner=user.id, character_id=character_id, persona=persona,
            scenario=scenario.model_dump(exclude_none=True) if scenario else None)

    greeting: str | None = None
    if not request.messages:
        if character is None:
            raise BadRequest("messages is empty: send a message, or a character_id for its opening",
                             code="empty_conversation")
        if await sessions.transcript(session_id):
            raise BadRequest("messages is empty: this session has already begun",
                             code="empty_conversation")
        greeting = _stored_greeting(character)
    else:
        new_user_turns = any(m.role == "user" for m in request.messages)
        if settings.max_turns and new_user_turns and meta and meta.user_turns >= settings.max_turns:
            raise Conflict(f"this conversation reached its limit of {settings.max_turns} turns; "
                           "start a new session", code="turn_limit_reached")
        stamp = now()
        await sessions.append_turns(session_id, [
            StoredMessage(role=m.role, content=m.content, at=stamp) for m in request.messages])

    setup = RoleplaySetup.merge(character, persona, scenario)
    history = [ChatMessage(m.role, m.content) for m in await sessions.transcript(session_id)]
    prompt = build_prompt(format_persona_for_roleplay(setup), history, character_name=setup.name)
    return PreparedTurn(session_id=session_id, model=request.model or settings.default_model,
                        prompt=prompt, request=request, greeting=greeting)


def _usage(turn: PreparedTurn, content: str, usage: Usage | None) -> ChatUsage:
    """The upstream's counts when it gave them, else local estimates."""
    usage = usage or Usage()
    prompt = usage.prompt_tokens
    if prompt is None:
        prompt = sum(count_tokens(m.content) for m in turn.prompt)
    completion = usage.completion_tokens
    if completion is None:
        completion = count_tokens(content)
    return ChatUsage(prompt_tokens=prompt, completion_tokens=completion)


async def _store_reply(turn: PreparedTurn, content: str, *, cut: bool = False) -> None:
    if content or cut:
        await sessions.append_reply(turn.session_id, StoredMessage(
            role="assistant", content=content, at=now(), cut=cut,
            greeting=not turn.request.messages))


async def chat_turn(request: ChatRequest, user: User) -> ChatReply:
    turn = await prepare_turn(request, user)
    if turn.greeting is not None:
        return await chat_turn_from_greeting(turn)
    completion = await llm_client().complete(turn.completion_request())
    await _store_reply(turn, completion.content)
    return ChatReply(content=completion.content, usage=_usage(turn, completion.content, completion.usage),
                     session_id=turn.session_id, model=turn.model,
                     finish_reason=completion.finish_reason)


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def open_stream(request: ChatRequest, user: User) -> AsyncIterator[str]:
    """Prepares the turn and reaches the upstream before the first byte is sent, so
    a bad request or an unreachable upstream is a plain JSON error, not a broken stream."""
    turn = await prepare_turn(request, user)
    if turn.greeting is not None:
        reply = await chat_turn_from_greeting(turn)
        return _single_event_stream(reply)
    chunks = llm_client().stream(turn.completion_request())
    first = await anext(chunks)
    return _relay(turn, first, chunks)


async def chat_turn_from_greeting(turn: PreparedTurn) -> ChatReply:
    """The character's stored opening line: no LLM call, no tokens."""
    assert turn.greeting is not None
    await _store_reply(turn, turn.greeting)
    return ChatReply(content=turn.greeting, usage=ChatUsage(prompt_tokens=0, completion_tokens=0),
                     session_id=turn.session_id, model=turn.model, finish_reason="stored")


async def _single_event_stream(reply: ChatReply) -> AsyncIterator[str]:
    yield _sse("delta", {"content": reply.content})
    yield _sse("done", reply.model_dump(exclude={"content"}))


async def _relay(
    turn: PreparedTurn, first: StreamChunk, chunks: AsyncIterator[StreamChunk]
) -> AsyncIterator[str]:
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
            chunk = await anext(chunks, None)
        content = "".join(parts)
        with anyio.CancelScope(shield=True):
            await _store_reply(turn, content)
        finished = True
        reply = ChatReply(
            content=content, usage=_usage(turn, content, closing.usage if closing else None),
            session_id=turn.session_id, model=turn.model,
            finish_reason=closing.finish_reason if closing else None)
        yield _sse("done", reply.model_dump(exclude={"content"}))
    except ApiError as error:
        with anyio.CancelScope(shield=True):
            await _store_reply(turn, "".join(parts), cut=True)
        finished = True
        yield _sse("error", {"code": error.error_code, "message": error.message, "cut": True})
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()  # type: ignore[attr-defined]
            if not finished:
                await _store_reply(turn, "".join(parts), cut=True)


async def session_view(session_id: str, user: User) -> SessionView:
    meta = await sessions.load_meta(session_id)
    if meta is None:
        raise NotFound("no such session", code="session_not_found")
    _owned(meta, user)
    messages = await sessions.transcript(session_id)
    return SessionView(
        session_id=session_id, character_id=meta.character_id, created_at=meta.created_at,
        user_turns=meta.user_turns, message_count=len(messages),
        messages=[m.model_dump(exclude_defaults=True) for m in messages])


async def end_session(session_id: str, user: User) -> SessionEnded:
    meta = await sessions.load_meta(session_id)
    if meta is None:
        raise NotFound("no such session", code="session_not_found")
    _owned(meta, user)
    return SessionEnded(session_id=session_id, ended=await sessions.delete(session_id))

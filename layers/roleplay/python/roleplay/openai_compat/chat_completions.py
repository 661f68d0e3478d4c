"""`POST /v1/chat/completions`: a character's turn with memory, or a plain pass-through.

`model: character/<id>` (or any model with an `X-Session-Id`) is a session turn: the
caller's history goes through `preparation.prepare` exactly as `/api/chat`'s
does, so the stored transcript absorbs a re-sent history without duplicates and the
prompt is the persona, the summary and the window, not whatever the client re-sent;
it is sent as `/api/chat` sends it too (`chat_service.complete_turn`: a prompt the
upstream refuses as too long is planned again and resent once).
The caller's system messages are told after the persona, never stored (clients
rebuild them every turn). A plain model name without a session header passes the
caller's messages to the upstream as they are, still under the user cap.

Quotas hold on every kind of call: a session turn (continue too) is checked by
`prepare` as `/api/chat`'s is; a pass-through, an impersonation or a quiet prompt is
one request checked here. Each counts its tokens (the upstream's figures, else local
estimates) once its reply is whole or cut.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
from pydantic import ValidationError

from roleplay.characters.model import ID_PATTERN
from roleplay.chat import service as chat_service
from roleplay.chat.background_jobs import JobRunner
from roleplay.chat.control.replace_turn import ReplaceTurn
from roleplay.chat.models import ChatReply, ChatRequest, MessageIn
from roleplay.chat.preparation import TurnStart
from roleplay.chat.prompt import build_prompt
from roleplay.chat.turn_starts import whole_history_turn_start
from roleplay.core.errors import ApiError, BadRequest, NotFound, UpstreamError
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import count_tokens, message_tokens
from roleplay.llm.client import ChatMessage, CompletionRequest, StreamChunk, Usage, llm_client
from roleplay.llm.served_models import checked_model
from roleplay.openai_compat.client_intent import (
    Intent,
    intent_of,
    is_quiet_pair,
    sent_by_sillytavern,
    without_nudge,
)
from roleplay.openai_compat.models import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
)
from roleplay.openai_compat.streaming import DONE, ChunkFormat, finish_reason
from roleplay.ops import quotas
from roleplay.sessions.concurrent_user_limiter import occupant_id
from roleplay.sessions.scope import owned_session
from roleplay.sessions.store import normalized

CHARACTER_PREFIX = "character/"
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class CompletionAnswer:
    """A whole completion or a stream of events; `session_id` goes out as `X-Session-Id`."""

    session_id: str | None
    completion: ChatCompletion | None = None
    events: AsyncIterator[str] | None = None


def character_of(model: str) -> str | None:
    """`character/<id>` → the id; None for a plain model name."""
    if not model.startswith(CHARACTER_PREFIX):
        return None
    character_id = model.removeprefix(CHARACTER_PREFIX)
    if not _ID.match(character_id):
        raise NotFound(f"the model {model!r} does not exist", code="model_not_found")
    return character_id


def session_for(user: User, body: ChatCompletionRequest, character_id: str | None) -> str:
    """The session when no `X-Session-Id` names one: the `user` field with the character,
    else the conversation's first user message with the character (so each conversation
    a client starts is its own session, and its re-sends find it again); always within
    the caller's own id, so callers never share one."""
    if body.end_user:
        basis = ["user", body.end_user]
    else:
        first = next((m.text for m in body.messages if m.plain_role == "user"), "")
        basis = ["first", first]
    key = json.dumps([user.id, character_id, *basis], ensure_ascii=False)
    return "oai-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _checked_session(header: str) -> str:
    if not _ID.match(header):
        raise BadRequest("X-Session-Id must be 1-64 letters, digits, _ or -",
                         code="invalid_session_id")
    return header


def _chat_request(body: ChatCompletionRequest, session_id: str,
                  character_id: str | None, *, history: bool = True) -> ChatRequest:
    """The `/api/chat` request this call amounts to (`history=False`: a Continue, which
    works on the stored transcript, not the client's copy of it). Issue 17 (lorebook, the
    caller's user persona) plugs in here: whatever `/api/chat` takes for them, set it on
    this request, and `prepare` applies it as it does there."""
    messages = [MessageIn(role=m.plain_role, content=m.text) for m in body.messages
                if m.plain_role != "system" and m.text.strip()] if history else []
    fields: dict[str, object] = {"messages": messages, "session_id": session_id,
                                 "character_id": character_id, "tts_enabled": False,
                                 "model": None if character_id else body.model,
                                 "top_p": body.top_p, "stop": list(body.stops) or None}
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if body.reply_tokens is not None:
        fields["max_tokens"] = body.reply_tokens
    options = body.sampling_options()
    if character_id is not None:  # token ids guessed by the client's tokenizer, not our model's
        options.pop("logit_bias", None)
    fields.update(options)
    try:
        return ChatRequest.model_validate(fields)
    except ValidationError as error:
        raise BadRequest(f"the request does not make a chat turn: {error.errors()[0]['msg']}",
                         code="invalid_request") from None


def _system_text(body: ChatCompletionRequest) -> str | None:
    """The caller's instructions, told after the persona; a Continue's nudge is not one
    (the continue turn asks in its own words)."""
    parts = [m.text.strip() for m in without_nudge(body)
             if m.plain_role == "system" and m.text.strip()]
    return "\n\n".join(parts) or None


def _completion(body: ChatCompletionRequest, content: str, usage: CompletionUsage,
                reason: str | None) -> ChatCompletion:
    return ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                          model=body.model, usage=usage,
                          choices=[Choice(message=AssistantMessage(content=content),
                                          finish_reason=finish_reason(reason))])


def _format(body: ChatCompletionRequest) -> ChunkFormat:
    return ChunkFormat(completion_id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                       model=body.model, include_usage=body.wants_usage_chunk)


async def create_completion(body: ChatCompletionRequest, user: User, *,
                            session_header: str | None, client: str,
                            jobs: JobRunner | None) -> CompletionAnswer:
    character_id = character_of(body.model)
    if character_id is None and session_header is None:
        return await _pass_through(body, user, client)
    intent = intent_of(body)
    if intent in ("impersonate", "quiet"):
        return await _unstored(body, user, client)
    session_id = (_checked_session(session_header) if session_header is not None
                  else session_for(user, body, character_id))
    if intent == "turn" and is_quiet_pair(body) and (
            sent_by_sillytavern(body) if session_header is None
            else await _unlike_session(session_id, user, body)):
        return await _unstored(body, user, client)
    return await _session_turn(body, user, session_id, character_id, jobs, intent)


async def _unlike_session(session_id: str, user: User, body: ChatCompletionRequest) -> bool:
    """Whether a bare `[system, user]` prompt sent to a session that has a history is not
    that history's opening exchange: an extension's prompt beside the chat."""
    scoped, meta = await owned_session(user, session_id, chat_service.sessions)
    if meta is None:
        return False
    first = await chat_service.sessions.read_range(scoped.key, 0, 1)
    asked = normalized(body.messages[-1].text)
    return bool(first) and not any(
        m.role == "user" and normalized(m.content) == asked for m in first)


async def _session_turn(body: ChatCompletionRequest, user: User, session_id: str,
                        character_id: str | None, jobs: JobRunner | None,
                        intent: Intent) -> CompletionAnswer:
    if intent == "continue":
        request = _chat_request(body, session_id, character_id, history=False)
        start: TurnStart = ReplaceTurn("continue")
    else:
        request, start = _chat_request(body, session_id, character_id), whole_history_turn_start()
    turn = await chat_service.prepare(request, user, start, extra_system=_system_text(body))
    if isinstance(turn, ChatReply) or turn.greeting is not None:
        # a retry of a turn already answered (its stored reply), or the stored opening line
        reply = turn if isinstance(turn, ChatReply) else await chat_service.chat_turn_from_greeting(
            turn, None)
        usage = CompletionUsage.of(0, 0)
        if body.stream:
            return CompletionAnswer(session_id, events=_single(_format(body), reply.content, usage))
        return CompletionAnswer(session_id, _completion(body, reply.content, usage, "stop"))

    if body.stream:
        turn, chunks, first = await chat_service.start_turn_stream(turn)
        return CompletionAnswer(session_id, events=_relay(_format(body), first, chunks,
                                                          _TurnEnd(turn, jobs)))
    turn, completion = await chat_service.complete_turn(turn)
    end = _TurnEnd(turn, jobs)
    await end.store(completion.content, completion.usage, cut=False)
    return CompletionAnswer(session_id, _completion(body, completion.content,
                                                    end.usage(completion.content, completion.usage),
                                                    completion.finish_reason))


async def _unstored(body: ChatCompletionRequest, user: User, client: str) -> CompletionAnswer:
    """Impersonate and quiet prompts: the client's own prompt (it holds the character and
    the chat) answered by the served model, nothing written to any session. A trailing
    instruction becomes the last user message and the rest is made a prompt the chat
    template accepts (`chat.prompt.build_prompt`)."""
    messages = [ChatMessage(m.plain_role, m.text) for m in body.messages]
    if messages[-1].role == "system":
        messages[-1] = ChatMessage("user", messages[-1].content)
    prompt = build_prompt(None, messages, language=get_settings().persona_language)
    return await _pass_through(body, user, client, model=await checked_model(None),
                               messages=prompt)


async def _pass_through(body: ChatCompletionRequest, user: User, client: str, *,
                        model: str | None = None,
                        messages: list[ChatMessage] | None = None) -> CompletionAnswer:
    await quotas.check(user, "chat")
    await chat_service.limiter.ensure_admitted(occupant_id(user, f"openai-{body.end_user or client}"))
    if messages is None:
        messages = [ChatMessage(m.plain_role, m.text) for m in body.messages]
    upstream = CompletionRequest(model=model or body.model, messages=messages,
                                 sampling=body.sampling())
    end = _PassThroughEnd(user, sum(message_tokens(m.content) for m in messages))
    with _callers_fault():
        if body.stream:
            chunks = llm_client().stream(upstream)
            first = await anext(chunks)
            return CompletionAnswer(None, events=_relay(_format(body), first, chunks, end))
        completion = await llm_client().complete(upstream)
    await end.store(completion.content, completion.usage, cut=False)
    return CompletionAnswer(None, _completion(body, completion.content,
                                              end.usage(completion.content, completion.usage),
                                              completion.finish_reason))


@contextmanager
def _callers_fault() -> Iterator[None]:
    """On a pass-through the caller chose the model and the messages, so an upstream that
    refuses them (an unknown model, roles it will not take) is the caller's 404 or 400,
    as OpenAI would answer, not our 502."""
    try:
        yield
    except UpstreamError as error:
        status = error.details.get("upstream_status") if isinstance(error.details, dict) else None
        if status == 404:
            raise NotFound(error.message, code="model_not_found") from None
        if status in (400, 422):
            raise BadRequest(error.message, code="upstream_rejected") from None
        raise


class _PassThroughEnd:
    """Nothing is stored but the tokens it cost the user; usage is the upstream's, else
    local estimates."""

    def __init__(self, user: User, prompt_estimate: int) -> None:
        self.user = user
        self.prompt_estimate = prompt_estimate

    def usage(self, content: str, usage: Usage | None) -> CompletionUsage:
        usage = usage or Usage()
        return CompletionUsage.of(
            self.prompt_estimate if usage.prompt_tokens is None else usage.prompt_tokens,
            count_tokens(content) if usage.completion_tokens is None else usage.completion_tokens)

    async def store(self, content: str, usage: Usage | None, *, cut: bool) -> None:
        await quotas.add_tokens(self.user, self.usage(content, usage).total_tokens)


class _TurnEnd:
    """The reply goes into the session, as `/api/chat`'s stream stores it, and its tokens
    count against the user's quota."""

    def __init__(self, turn: chat_service.PreparedTurn, jobs: JobRunner | None) -> None:
        self.turn = turn
        self.jobs = jobs

    def usage(self, content: str, usage: Usage | None) -> CompletionUsage:
        figures = chat_service.reply_for(self.turn, content, usage, None).usage
        return CompletionUsage.of(figures.prompt_tokens or 0, figures.completion_tokens or 0)

    async def store(self, content: str, usage: Usage | None, *, cut: bool) -> None:
        await chat_service.finish_turn(self.turn, content, usage, None if cut else self.jobs,
                                       cut=cut)
        if self.turn.user is not None:
            await quotas.add_tokens(self.turn.user, self.usage(content, usage).total_tokens)


async def _single(fmt: ChunkFormat, content: str, usage: CompletionUsage) -> AsyncIterator[str]:
    yield fmt.role()
    yield fmt.delta(content)
    yield fmt.finish("stop")
    if fmt.include_usage:
        yield fmt.usage(usage)
    yield DONE


async def _relay(fmt: ChunkFormat, first: StreamChunk, chunks: AsyncIterator[StreamChunk],
                 end: _TurnEnd | _PassThroughEnd) -> AsyncIterator[str]:
    """Deltas as they come; the reply is stored (a session turn) before the closing chunks,
    and what was generated is stored marked `cut` if the upstream fails or the client
    leaves, as on `/api/chat`."""
    parts: list[str] = []
    closing: StreamChunk | None = None
    finished = False
    try:
        yield fmt.role()
        chunk: StreamChunk | None = first
        while chunk is not None:
            if chunk.done:
                closing = chunk
                break
            if chunk.delta:
                parts.append(chunk.delta)
                yield fmt.delta(chunk.delta)
            chunk = await anext(chunks, None)
        content = "".join(parts)
        usage = closing.usage if closing else None
        with anyio.CancelScope(shield=True):
            await end.store(content, usage, cut=False)
        finished = True
        yield fmt.finish(finish_reason(closing.finish_reason if closing else None))
        if fmt.include_usage:
            yield fmt.usage(end.usage(content, usage))
        yield DONE
    except ApiError as error:
        with anyio.CancelScope(shield=True):
            await end.store("".join(parts), None, cut=True)
        finished = True
        yield fmt.failure(error.status_code, error.message, error.error_code)
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()  # type: ignore[attr-defined]
            if not finished:
                await end.store("".join(parts), None, cut=True)

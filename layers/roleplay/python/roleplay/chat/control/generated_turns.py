"""Regenerate and continue: turns that generate a reply under the session's lease, like
`/api/chat`, but store it in place of the last reply (`replace_turn`).

Both reuse the chat turn's machinery (`PreparedTurn`, `finish_turn`, the SSE relay,
speech per `tts_mode`) with the store hook of `replace_turn.ReplaceTurn`. The prompt is
planned as a chat turn's is (`context_fit`): against the upstream's real context, counted
exactly at the edge, planned again and resent once if refused as too long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from roleplay.chat import turn_observer
from roleplay.chat.background_jobs import JobRunner
from roleplay.chat.control.models import GenerateRequest
from roleplay.chat.control.replace_turn import Action, ReplaceTurn, edits
from roleplay.chat.models import ChatReply, ChatRequest
from roleplay.chat.preparation import PreparedTurn, prepare
from roleplay.chat.service import complete_turn, finish_turn, reply_for, speak_reply, start_turn_stream
from roleplay.chat.stream import relay
from roleplay.core.identity import User


async def _prepared(action: Action, session_id: str, body: GenerateRequest, user: User,
                    ) -> PreparedTurn:
    request = ChatRequest.model_validate({**body.model_dump(exclude_unset=True),
                                          "session_id": session_id})
    turn = await prepare(request, user, ReplaceTurn(action))
    assert isinstance(turn, PreparedTurn)  # a replaced reply is never a replay
    return turn


async def generate(action: Action, session_id: str, body: GenerateRequest, user: User,
                   jobs: JobRunner | None) -> ChatReply:
    turn, completion = await complete_turn(await _prepared(action, session_id, body, user))
    scheduled = await finish_turn(turn, completion.content, completion.usage, jobs)
    speech = await speak_reply(turn, completion.content, jobs)
    reply = reply_for(turn, completion.content, completion.usage, completion.finish_reason,
                      summary_scheduled=scheduled, speech=speech)
    if action == "continue" and turn.reply_stored:
        stored = await edits.locate(turn.session_id, turn.reply_id)
        if stored is not None:
            reply = reply.model_copy(update={"content": stored.message.content})
    await turn_observer.turn_answered(turn.request, reply, user)
    return reply


async def generate_stream(action: Action, session_id: str, body: GenerateRequest, user: User,
                          jobs: JobRunner | None) -> AsyncIterator[str]:
    """As `/api/chat` with `stream: true`: the upstream is reached before the first byte."""
    turn, chunks, first = await start_turn_stream(await _prepared(action, session_id, body, user))
    return relay(turn, first, chunks, jobs)

"""The store step of regenerate and continue: begin on the stored transcript under the
session's lease, and store the reply in place of the last one instead of appending.

The reply goes into the stored message by compare-and-set under the lease, which also
releases it. Everything that can refuse (owner, budget, what the last message is) is
checked before anything is written, and a refusal or an upstream failure releases the
lease with the transcript untouched.

Regenerate answers the last user message again: the new text becomes a version of the
reply (the old ones stay as alternatives), or, when the last message is the user's (its
turn failed), the reply is appended. Continue asks the model to go on from the last
assistant reply (the prompt ends on a user instruction, as Gemma 3's template requires)
and stores old + new text as one message.

This module imports neither the chat service nor its stream, so both can hand a turn
to it: a swipe (a re-sent history already answered) is a regenerate
(`preparation.AppendTurn.swipe`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from roleplay.chat.control.alternatives import listing, with_content, with_new_version
from roleplay.chat.models import ChatRequest
from roleplay.chat.preparation import PreparedTurn, Started, Store, TurnFacts
from roleplay.core.errors import Conflict, NotFound
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import message_tokens
from roleplay.sessions.store import SessionStore, StoredMessage, Turn, Window, now
from roleplay.sessions.transcript_edits import Began, TranscriptEdits
from roleplay.sessions.turn_wait import when_free

Action = Literal["regenerate", "continue"]

CONTINUE_INSTRUCTION = {
    "ko": "(방금 한 말을 끊긴 곳에서 그대로 이어서 계속해 주세요. 이미 한 말은 반복하지 마세요.)",
    "en": "(Continue your last reply exactly where it stopped. Do not repeat what you already said.)",
}

sessions = SessionStore()
edits = TranscriptEdits(sessions)


def joined(old: str, more: str) -> str:
    """The continued reply: a space between the two parts unless one side has it already."""
    if not old or not more or old[-1].isspace() or more[0].isspace() or more[0] in ".,!?…)」』":
        return old + more
    return f"{old} {more}"


def _with_messages(window: Window, messages: list[StoredMessage], length: int) -> Window:
    return window.model_copy(update={"messages": messages, "length": length})


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
                                         epoch=window.epoch, recalled=turn.recalled)
            if stored is True and message.alternatives:
                turn.alternatives = listing(message)
            return window.length if stored is True else 0

        return prompt_window, store_continued

    if tail is not None and tail.role == "user":
        async def store_appended(turn: PreparedTurn, reply: StoredMessage) -> int:
            reply = reply.model_copy(update={"greeting": False})
            stored = await edits.replace(session_id, window.length, None, reply, token=token,
                                         epoch=window.epoch, recalled=turn.recalled)
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
                                     epoch=window.epoch, recalled=turn.recalled)
        if stored is True:
            turn.alternatives = listing(message)
        return window.length if stored is True else 0

    return _with_messages(window, window.messages[:-1], window.length - 1), store_version


@dataclass(frozen=True)
class ReplaceTurn:
    """The store step of regenerate and continue: begin on the stored transcript under the
    lease (`transcript_edits`), and store the reply in place of the last one."""

    action: Action
    appends: bool = False

    async def begin(self, facts: TurnFacts, request: ChatRequest) -> Started:
        session_id = facts.session_id
        token = uuid.uuid4().hex
        began = await when_free(lambda: edits.begin(session_id, token))
        if began is None:
            raise NotFound("no such session", code="session_not_found")
        lease = Turn(session_id=session_id, token=token, window=began.window,
                     kept=began.window.length, appended=0)
        try:
            window, store = _plan_for(self.action, began, session_id, token)
        except BaseException:
            await sessions.end_turn(lease)
            raise
        tail = began.window.tail
        reply_id = tail.id if tail is not None and (
            self.action == "continue" or tail.role == "assistant") else None
        return Started(lease=lease, window=window, store=store, reply_id=reply_id or None)

"""What the conversation-control endpoints do, short of generating (`generated_turns`):
page the transcript, select a version, edit, delete or rewind, fix the summary, pin facts.

Each checks the owner first (a session of another user does not exist for the caller),
then changes Redis in one script that waits for a turn in progress (`session_wait`),
so a refusal changes nothing and nothing interleaves with a turn.
"""

from __future__ import annotations

import re

from roleplay.chat.control.alternatives import listing, with_content, with_selected
from roleplay.chat.control.models import (
    MessageChanged,
    MessagePage,
    MessagesDeleted,
    MessageView,
    PinsView,
    SummaryView,
)
from roleplay.chat.control.pins import add_pin, new_pin, remove_pin
from roleplay.chat.session_service import ensure_session_owner
from roleplay.core.errors import BadRequest, Conflict, NotFound
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import count_tokens
from roleplay.sessions.scope import owned_session
from roleplay.sessions.store import Busy, SessionMeta, SessionStore, StoredMessage, now
from roleplay.sessions.transcript_edits import Located, TranscriptEdits
from roleplay.sessions.turn_wait import when_free

MAX_PAGE = 200
MAX_CURSOR = 2**32 - 1
"""Past any transcript's end (a Redis list holds fewer): a cursor beyond it was not given here."""
_CURSOR = re.compile(r"[0-9]{1,10}")

sessions = SessionStore()


async def own_session(session_id: str, user: User) -> tuple[str, SessionMeta]:
    """The session's storage key (`session_scope`: the client's id within its owner) and
    its metadata; another owner's session does not exist for the caller."""
    scoped, meta = await owned_session(user, session_id, sessions)
    if meta is None:
        raise NotFound("no such session", code="session_not_found")
    ensure_session_owner(meta, user)
    return scoped.key, meta
CAS_ATTEMPTS = 5
"""A compare-and-set that lost to another change reads the message again this often."""

edits = TranscriptEdits(sessions)


def message_view(message: StoredMessage, index: int) -> MessageView:
    return MessageView(id=message.id or f"legacy-{index}", index=index, role=message.role,
                       content=message.content, at=message.at, tokens=message.tokens,
                       cut=message.cut, greeting=message.greeting, edited=message.edited,
                       alternatives=listing(message) if message.alternatives else None)


def cursor_index(cursor: str | None) -> int:
    """The index a `next_cursor` names; 400 `bad_cursor` for anything else. ASCII digits
    only (`str.isdigit` also takes `²`, which `int` refuses) and at most `MAX_CURSOR`: Redis
    refuses a range bound past 64 bits, and the page then was a 500."""
    if cursor is None:
        return 0
    if not _CURSOR.fullmatch(cursor) or int(cursor) > MAX_CURSOR:
        raise BadRequest("cursor is not one this endpoint gave (pass next_cursor as it came)",
                         code="bad_cursor")
    return int(cursor)


async def page(session_id: str, user: User, cursor: str | None, limit: int) -> MessagePage:
    first = cursor_index(cursor)
    session_id, meta = await own_session(session_id, user)
    limit = max(1, min(limit, MAX_PAGE))
    total = await sessions.length(session_id)
    messages = await sessions.read_range(session_id, first, first + limit - 1)
    after = first + len(messages)
    return MessagePage(messages=[message_view(m, first + n) for n, m in enumerate(messages)],
                       total=total, next_cursor=str(after) if after < total else None,
                       summary_upto=meta.summary_upto)


async def _find(session_id: str, message_id: str) -> Located:
    found = await edits.locate(session_id, message_id)
    if found is None:
        raise NotFound("no such message in this session", code="message_not_found")
    return found


async def _change(session_id: str, client_session_id: str, message_id: str, *,
                  select: int | None = None, content: str | None = None) -> MessageChanged:
    """Reads the message, makes the new one, stores it by compare-and-set (again when
    another change won in between); waits for a turn in progress."""
    for _ in range(CAS_ATTEMPTS):
        found = await _find(session_id, message_id)
        message = found.message
        if select is not None:
            if message.role != "assistant":
                raise Conflict("only a character's reply has alternatives",
                               code="not_an_assistant_message")
            if select >= len(message.alternatives or [message.content]):
                raise NotFound(f"this reply has no alternative {select}",
                               code="alternative_not_found")
            new = with_selected(message, select)
        else:
            assert content is not None
            new = with_content(message, content, edited=True, cut=False)
        meta = await sessions.load_meta(session_id)
        below = meta is not None and found.index <= meta.summary_upto

        async def attempt(found: Located = found, new: StoredMessage = new) -> bool | Busy:
            return await edits.replace(session_id, found.index, found.raw, new)

        if await when_free(attempt):
            return MessageChanged(session_id=client_session_id, message=message_view(new, found.index),
                                  summary_invalidated=below)
    raise Conflict("the message kept changing; try again", code="message_changed")


async def select(session_id: str, message_id: str, index: int, user: User) -> MessageChanged:
    key, _ = await own_session(session_id, user)
    return await _change(key, session_id, message_id, select=index)


async def edit(session_id: str, message_id: str, content: str, user: User) -> MessageChanged:
    key, _ = await own_session(session_id, user)
    if not content.strip():
        raise BadRequest("content is empty: delete the message instead", code="empty_content")
    return await _change(key, session_id, message_id, content=content)


async def delete(session_id: str, message_id: str, user: User, *,
                 and_after: bool) -> MessagesDeleted:
    key, meta = await own_session(session_id, user)
    found = await _find(key, message_id)
    deleted = await when_free(lambda: edits.delete(key, message_id, and_after=and_after))
    if deleted is None:
        raise NotFound("no such message in this session", code="message_not_found")
    return MessagesDeleted(session_id=session_id, deleted=deleted,
                           message_count=await sessions.length(key),
                           summary_invalidated=found.index <= meta.summary_upto)


async def put_summary(session_id: str, text: str, user: User) -> SummaryView:
    key, meta = await own_session(session_id, user)
    settings = get_settings()
    tokens = count_tokens(text.strip())
    if tokens > settings.summary_max_tokens * 2:
        raise BadRequest(f"the summary is {tokens} tokens; keep it under "
                         f"{settings.summary_max_tokens * 2}", code="summary_too_long")
    stored = await when_free(lambda: edits.put_summary(key, text.strip(), tokens, now()))
    if not stored:
        raise NotFound("no such session", code="session_not_found")
    return SummaryView(session_id=session_id, summary=text.strip(), summary_upto=meta.summary_upto)


async def pin(session_id: str, text: str, user: User) -> PinsView:
    key, _ = await own_session(session_id, user)
    settings = get_settings()
    text = " ".join(text.split())
    if not text or len(text) > settings.pin_max_chars:
        raise BadRequest(f"a pin is 1 to {settings.pin_max_chars} characters", code="bad_pin")
    answer = await add_pin(key, new_pin(text), settings.max_pins)
    if answer == "gone":
        raise NotFound("no such session", code="session_not_found")
    if answer == "full":
        raise Conflict(f"this session already has {settings.max_pins} pins; remove one first",
                       code="pins_full")
    return await pins(session_id, user)


async def unpin(session_id: str, pin_id: str | None, user: User) -> PinsView:
    key, _ = await own_session(session_id, user)
    answer = await remove_pin(key, pin_id)
    if answer == "gone":
        raise NotFound("no such session", code="session_not_found")
    if answer == "missing":
        raise NotFound("no such pin in this session", code="pin_not_found")
    return await pins(session_id, user)


async def pins(session_id: str, user: User) -> PinsView:
    _, meta = await own_session(session_id, user)
    return PinsView(session_id=session_id, pins=meta.pins, max_pins=get_settings().max_pins)

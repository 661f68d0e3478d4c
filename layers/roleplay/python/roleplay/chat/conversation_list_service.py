"""What the conversation-list endpoints do: list the caller's conversations, retitle one.

The list's order and cards come from the user's index (`sessions.conversation_index`);
a hot conversation's length and last message are read from Redis as the page is made
(one pipeline for the page), a cold one's from the card the archive wrote when it moved
it out, so a cold conversation stays listed without being brought back. A conversation
that expired but is still indexed is left out, and dropped by the next sweep.
"""

from __future__ import annotations

import json
from typing import Any

from roleplay.chat.models import ConversationItem, ConversationPage, ConversationRenamed
from roleplay.chat.session_service import own_session
from roleplay.core.identity import User
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.sessions import conversation_index
from roleplay.sessions.scope import storage_id
from roleplay.sessions.store import now

MAX_PAGE = 100


async def list_conversations(user: User, *, limit: int, cursor: str | None,
                             character_id: str | None) -> ConversationPage:
    found, next_cursor = await conversation_index.page(
        user.id, limit=min(max(limit, 1), MAX_PAGE), cursor=cursor, character_id=character_id)
    if not found:
        return ConversationPage(items=[], next_cursor=None)
    keys = redis_keys()
    async with (await get_redis()).pipeline(transaction=False) as pipe:
        for item in found:
            key = str(item.card.get("key") or storage_id(user.id, item.session_id))
            pipe.hmget(keys.session(key), ["character_id", "created_at", "owner"])
            pipe.llen(keys.session_messages(key))
            pipe.lindex(keys.session_messages(key), -1)
            pipe.lrange(keys.session_messages(key), 0, 3)
            pipe.exists(keys.session_cold(key))
        answers = await pipe.execute()
    items = []
    for n, item in enumerate(found):
        (character, created, owner), length, last, first, cold = answers[5 * n:5 * n + 5]
        if (owner is not None and owner != user.id) or (owner is None and not cold):
            await conversation_index.unlist(user.id, item.session_id)  # bound away, or expired
        elif owner is not None:
            items.append(_hot(item, character, created, int(length), last, first))
        else:
            items.append(_cold(item))
    return ConversationPage(items=items, next_cursor=next_cursor)


def _hot(item: conversation_index.ListedConversation, character: str | None, created: str | None,
         length: int, last: str | None, first: list[str]) -> ConversationItem:
    card = item.card
    title = str(card.get("title") or "")
    if not title:  # made on a stored opening line: the first user message names it
        users = (json.loads(raw) for raw in first)
        title = conversation_index.default_title(
            next((m["content"] for m in users if m.get("role") == "user"), ""))
    newest = json.loads(last) if last else None
    updated = max(item.updated_at, float(newest.get("at") or 0)) if newest else item.updated_at
    return ConversationItem(
        session_id=item.session_id, character_id=character or card.get("character_id"),
        title=title, preview=conversation_index.preview_of(newest["content"]) if newest else None,
        message_count=length, created_at=float(created) if created else card.get("created_at"),
        updated_at=updated, state="hot")  # the list's clock moves up only every TOUCH_EVERY_S


def _cold(item: conversation_index.ListedConversation) -> ConversationItem:
    card: dict[str, Any] = item.card
    return ConversationItem(
        session_id=item.session_id, character_id=card.get("character_id"),
        title=str(card.get("title") or ""), preview=card.get("preview"),
        message_count=int(card.get("messages") or 0), created_at=card.get("created_at"),
        updated_at=item.updated_at, state="cold")


async def rename(session_id: str, title: str, user: User) -> ConversationRenamed:
    """Sets the title the list shows (the conversation itself is untouched)."""
    key, meta = await own_session(session_id, user)
    if not await conversation_index.listed(user.id, session_id):  # older than the list
        await conversation_index.touch(user.id, session_id, key, at=meta.created_at or now(),
                                       character_id=meta.character_id, first_user_message=None)
    clean = " ".join(title.split())
    await conversation_index.merge_card(user.id, session_id, {"key": key, "title": clean},
                                        title_wins=True)
    return ConversationRenamed(session_id=session_id, title=clean)

"""Which conversations a user has, newest first: the list a frontend shows on any device.

Kept in the user's key space (`{u:<id>}`, one hash slot per user): a sorted set of the
user's session ids by last use, and a hash of list cards (title, character, when made;
for a cold conversation also its preview and length, written when it moved out). A
hot conversation's preview and length are read from the conversation itself when the
list is asked for, so a turn only moves its entry up: `touch`, one pipeline of two
ZADDs and an HSETNX that writes the card only the first time.

The archive finds idle conversations through `{p}conversations:hot` (every conversation
in Redis, by last use; its member names the storage id and the session id) and expired
cold ones through `{p}conversations:cold` (whose member also names the owner).
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from roleplay.core.errors import BadRequest, Conflict
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

TITLE_CHARS = 80
PREVIEW_CHARS = 140
_CURSOR = re.compile(r"(\d{1,15})\.(.{1,200})")

TOUCH_EVERY_S = 30.0
"""A conversation its user goes on talking in is moved up by one process at most this
often: the touch was a pipeline on every turn (about 5% of a text turn's CPU). A user
switching conversations is always touched, so one process's list order stays exact;
the list's `updated_at` of a hot conversation is its last message's time anyway, and
the archive's idle clock (a day) does not notice half a minute."""
_TOUCH_MEMO_USERS = 10_000
_last_touch: OrderedDict[str, tuple[str, float]] = OrderedDict()
"""Per process, by the user's list key: the conversation it touched last, and when."""

# KEYS: the user's cards hash. ARGV: session id, card fields (JSON), whether the title given
# replaces one already there ('1') or only fills an empty one ('0').
# Merges the fields into the session's card.
_MERGE_CARD = LuaScript("""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local card = raw and cjson.decode(raw) or {}
for k, v in pairs(cjson.decode(ARGV[2])) do
  if k ~= 'title' or ARGV[3] == '1' or not card.title or card.title == '' then card[k] = v end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(card))
return 1
""")

# KEYS: a sorted set. ARGV: member, its score when read. Removes the member only if nobody
# moved it since (a turn's touch, a restore).
_REMOVE_IF_UNCHANGED = LuaScript("""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
""")


class TooManyConversations(Conflict):
    code = "too_many_conversations"


def member(storage_id: str, session_id: str) -> str:
    """A conversation in the hot index: what the sweep needs (the owner, which a cookie's
    binding may change, it reads from the conversation itself)."""
    return json.dumps([storage_id, session_id], separators=(",", ":"))


def cold_member(storage_id: str, session_id: str, owner: str) -> str:
    """A conversation in the cold index: with its owner, whose list it leaves on expiry."""
    return json.dumps([storage_id, session_id, owner], separators=(",", ":"))


def parse_member(raw: str) -> list[str]:
    """[storage id, session id] (hot) or [storage id, session id, owner] (cold)."""
    return [str(part) for part in json.loads(raw)]


def default_title(text: str) -> str:
    """The first user message, cut at a word near `TITLE_CHARS`."""
    flat = " ".join(text.split())
    if len(flat) <= TITLE_CHARS:
        return flat
    cut = flat[:TITLE_CHARS].rsplit(" ", 1)[0] or flat[:TITLE_CHARS]
    return cut + "…"


def preview_of(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[:PREVIEW_CHARS - 1] + "…"


async def touch(user_id: str, session_id: str, storage_id: str, *, at: float,
                character_id: str | None, first_user_message: str | None) -> None:
    """Moves the conversation to the top of the user's list and marks it used (the
    archive's clock); makes its card the first time (titled by the turn's first user
    message; a stored opening line alone leaves the title to the list). One round trip."""
    if touch_due(user_id, session_id):
        await _touch(user_id, session_id, storage_id, at=at, character_id=character_id,
                     first_user_message=first_user_message)


def touch_due(user_id: str, session_id: str) -> bool:
    """Whether `touch` would write: not while the user stays in the conversation this
    process last touched for them, for `TOUCH_EVERY_S`."""
    last = _last_touch.get(redis_keys().user_conversations(user_id))
    return last is None or last[0] != session_id or time.monotonic() - last[1] >= TOUCH_EVERY_S


async def _touch(user_id: str, session_id: str, storage_id: str, *, at: float,
                 character_id: str | None, first_user_message: str | None) -> None:
    keys = redis_keys()
    listing = keys.user_conversations(user_id)
    score = int(at * 1000)
    async with (await get_redis()).pipeline(transaction=False) as pipe:
        pipe.zadd(listing, {session_id: score})
        pipe.zadd(keys.hot_conversations, {member(storage_id, session_id): score})
        pipe.hsetnx(keys.user_conversation_cards(user_id), session_id, json.dumps(
            {"key": storage_id, "character_id": character_id, "created_at": at,
             "title": default_title(first_user_message or "")}, ensure_ascii=False))
        await pipe.execute()
    _last_touch[listing] = (session_id, time.monotonic())
    _last_touch.move_to_end(listing)
    if len(_last_touch) > _TOUCH_MEMO_USERS:
        _last_touch.popitem(last=False)


def _untouched(user_id: str) -> None:
    """The next touch of the user's conversations goes to Redis (one left the list)."""
    _last_touch.pop(redis_keys().user_conversations(user_id), None)


def listing_key(user_id: str) -> str:
    """The user's list, whose size `ensure_room` checks (a caller may read it beforehand
    in a round trip it makes anyway)."""
    return redis_keys().user_conversations(user_id)


async def ensure_room(user_id: str, *, listed: int | None = None) -> None:
    """A new conversation past `MAX_CONVERSATIONS` is refused (the list stays bounded).
    `listed`: the list's size, when the caller read it already."""
    limit = get_settings().max_conversations
    if listed is None:
        listed = await (await get_redis()).zcard(listing_key(user_id))
    if listed >= limit:
        raise TooManyConversations(
            f"you keep {limit} conversations, the most allowed: delete one to start another",
            details={"max_conversations": limit})


async def merge_card(user_id: str, session_id: str, fields: dict[str, Any], *,
                     title_wins: bool = False) -> None:
    await _MERGE_CARD([redis_keys().user_conversation_cards(user_id)],
                      [session_id, json.dumps(fields, ensure_ascii=False), "1" if title_wins else "0"])


async def listed(user_id: str, session_id: str) -> bool:
    return await (await get_redis()).zscore(redis_keys().user_conversations(user_id),
                                            session_id) is not None


async def remove_if_unchanged(key: str, entry: str, score: float) -> bool:
    return bool(await _REMOVE_IF_UNCHANGED([key], [entry, score]))


async def forget(user_id: str, session_id: str, storage_id: str) -> None:
    """Takes the conversation off the user's list and the archive's indexes."""
    _untouched(user_id)
    keys = redis_keys()
    async with (await get_redis()).pipeline(transaction=False) as pipe:
        pipe.zrem(keys.user_conversations(user_id), session_id)
        pipe.hdel(keys.user_conversation_cards(user_id), session_id)
        pipe.zrem(keys.hot_conversations, member(storage_id, session_id))
        pipe.zrem(keys.cold_conversations, cold_member(storage_id, session_id, user_id))
        await pipe.execute()


async def unlist(user_id: str, session_id: str) -> None:
    """Off the user's list alone: an entry whose conversation expired, or was bound to
    another owner (an address's session taken by the browser's cookie)."""
    _untouched(user_id)
    keys = redis_keys()
    async with (await get_redis()).pipeline(transaction=False) as pipe:
        pipe.zrem(keys.user_conversations(user_id), session_id)
        pipe.hdel(keys.user_conversation_cards(user_id), session_id)
        await pipe.execute()


@dataclass(frozen=True)
class ListedConversation:
    session_id: str
    updated_at: float
    card: dict[str, Any]


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    found = _CURSOR.fullmatch(cursor)
    if found is None:
        raise BadRequest("cursor is not one this server gave", code="bad_cursor")
    return int(found.group(1)), found.group(2)


def cursor_of(item: ListedConversation) -> str:
    return f"{int(item.updated_at * 1000)}.{item.session_id}"


async def page(user_id: str, *, limit: int, cursor: str | None,
               character_id: str | None) -> tuple[list[ListedConversation], str | None]:
    """A page of the user's conversations, newest first, after `cursor`; and the cursor
    of the next page (None: this is the last). Equal times order by session id."""
    keys = redis_keys()
    redis = await get_redis()
    after = parse_cursor(cursor)
    top: float | str = "+inf" if after is None else after[0]
    found: list[ListedConversation] = []
    chunk = max(limit * 2, 20)
    offset = 0
    while len(found) <= limit:
        rows: Sequence[tuple[str, float]] = await redis.zrevrangebyscore(  # type: ignore[assignment]
            keys.user_conversations(user_id), top, "-inf", start=offset, num=chunk, withscores=True)
        if not rows:
            break
        offset += len(rows)
        kept = [(sid, score) for sid, score in rows
                if after is None or score < after[0] or sid < after[1]]
        cards = await redis.hmget(keys.user_conversation_cards(user_id),
                                  [sid for sid, _ in kept]) if kept else []
        for (sid, score), raw in zip(kept, cards, strict=True):
            card = json.loads(raw) if raw else {}
            if character_id is not None and card.get("character_id") != character_id:
                continue
            found.append(ListedConversation(sid, score / 1000, card))
        if len(rows) < chunk:
            break
    more = len(found) > limit
    found = found[:limit]
    return found, cursor_of(found[-1]) if more and found else None

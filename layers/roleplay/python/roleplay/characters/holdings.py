"""What each user has stored: characters and their bytes, bounded per user.

Characters never expire, so without a bound one user could fill Redis (four 7 MB PNG
imports took 52 MB). A hash per user, under the user's hash tag, maps each character
they stored to its stored bytes (its JSON and its picture, base64) and when it was
recorded; one script checks and
records a write against `MAX_CHARACTERS_PER_USER` and `MAX_CARD_BYTES_PER_USER`
atomically, so concurrent imports cannot both slip under a bound. The hash lives in
Redis whichever store holds the characters (DynamoDB's items too are counted here).

A character counts against the user who stored it: its owner when signed in, else the
anonymous client itself (an anonymous character's `owner` is the shared `anonymous`).
A refused write first drops entries whose character is gone (deleted by another client,
or a write that died between its steps) and asks once more, so the count cannot drift
upward for good; only entries a minute old are looked at, so a write still under way in
another request (recorded, not yet stored) is never taken for one that died. Admins are
recorded but not bounded. Characters stored before this hash existed are not counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from roleplay.core.errors import Conflict, PayloadTooLarge
from roleplay.core.identity import ANONYMOUS_ID, User
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

_HOLD = LuaScript("""
local held = redis.call('HGET', KEYS[1], ARGV[1])
local bytes, max_count, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local count = redis.call('HLEN', KEYS[1])
if not held and max_count > 0 and count >= max_count then
  return {1, count, 0}
end
local before = held and tonumber(string.match(held, '^%d+')) or 0
if max_bytes > 0 and bytes > before then
  local total = 0
  for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
    total = total + tonumber(string.match(value, '^%d+'))
  end
  if total - before + bytes > max_bytes then
    return {2, count, total}
  end
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], bytes .. ':' .. (now[1] * 1000 + math.floor(now[2] / 1000)))
return {0, count, 0}
""")
"""KEYS: the user's hash. ARGV: character id, its bytes now, the two bounds (0 = none).
Records `<bytes>:<ms>` (Redis's clock) and answers {0}; or {1, count} over the count,
{2, count, bytes held} over the bytes. A write that does not grow a character is never
refused."""

_OLDER = LuaScript("""
local now = redis.call('TIME')
local before = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[1])
local found = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if tonumber(string.match(entries[i + 1], ':(%d+)$') or '0') < before then
    found[#found + 1] = entries[i]
    found[#found + 1] = entries[i + 1]
  end
end
return found
""")
"""KEYS: the user's hash. ARGV: an age in ms. Its entries recorded longer ago, id then value."""

_FORGET = LuaScript("""
local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    dropped = dropped + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return dropped
""")
"""KEYS: the user's hash. ARGV: id, value pairs; each dropped only if still at that value."""

SETTLED_MS = 60_000
"""An entry this old names a character whose write has long finished: if the store does
not have it, it is gone. A younger one may be a write still under way, and is kept."""

Exists = Callable[[Sequence[str]], Awaitable[set[str]]]
"""Which of these character ids the store still holds."""


def holder(owner: str, user: User) -> str:
    """Whose allowance a character counts against (see above)."""
    return owner if owner != ANONYMOUS_ID else user.id


async def hold(user_id: str, character_id: str, size: int, *, exempt: bool,
               exists: Exists) -> None:
    """Records `character_id` at `size` bytes for `user_id`, or refuses (409 for the
    count, 413 for the bytes) when that would pass a bound."""
    settings = get_settings()
    bounds = (0, 0) if exempt else (settings.max_characters_per_user,
                                    settings.max_card_bytes_per_user)
    key = redis_keys().user_characters(user_id)
    answer = await _HOLD([key], [character_id, size, *bounds])
    if int(answer[0]) and await _forget_gone(key, exists):
        answer = await _HOLD([key], [character_id, size, *bounds])
    outcome, count, total = (int(value) for value in answer)
    if outcome == 1:
        raise Conflict(f"you have {count} characters, the most one user may keep "
                       f"(MAX_CHARACTERS_PER_USER={bounds[0]}); delete one first",
                       code="too_many_characters")
    if outcome == 2:
        raise PayloadTooLarge(f"this would take your characters past "
                              f"MAX_CARD_BYTES_PER_USER={bounds[1]} bytes (they hold {total}, "
                              f"this one {size}); delete one or send a smaller card",
                              code="character_storage_full")


async def release(user_ids: Iterable[str], character_id: str) -> None:
    """The character no longer counts for any of `user_ids`."""
    redis, keys = await get_redis(), redis_keys()
    for user_id in dict.fromkeys(user_ids):
        await redis.hdel(keys.user_characters(user_id), character_id)


async def _forget_gone(key: str, exists: Exists) -> bool:
    """Drops the settled entries of characters the store no longer has; whether any were."""
    found = [str(value) for value in await _OLDER([key], [SETTLED_MS])]
    settled = dict(zip(found[::2], found[1::2], strict=True))
    if not settled:
        return False
    present = await exists(list(settled))
    gone = [item for character_id, value in settled.items() if character_id not in present
            for item in (character_id, value)]
    return bool(gone) and int(await _FORGET([key], gone)) > 0

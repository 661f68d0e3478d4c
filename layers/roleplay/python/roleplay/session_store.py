"""Conversation sessions in Redis: the server's transcript is the source of truth.

The transcript is append-only and never trimmed. New turns are appended by one Lua
script, so two requests racing on a session cannot interleave a read and a write:
each batch lands whole, in arrival order. The script also drops the part of a
request that repeats the stored tail, so a client that re-sends the whole
conversation (as the design document's frontend does), or retries after an upstream
failure, never stores a message twice.

A rolling summary covers the transcript up to a watermark (the index of the last
message it covers). A turn reads only what lies after the watermark, so turn 1,000
costs what turn 10 does; the full transcript is read only when a client asks for it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel

from roleplay.lua_script import LuaScript
from roleplay.redis_client import get_redis
from roleplay.redis_keys import redis_keys
from roleplay.settings import get_settings

Role = Literal["user", "assistant", "system"]

WINDOW_CAP = 256
"""At most this many messages after the watermark are read per turn. More only piles
up while summaries fail, and then the oldest would be dropped from the prompt anyway."""

# KEYS: messages list, meta hash, summary lock. ARGV: ttl, JSON array of incoming (role,
# content), created_at, window cap, then each message as stored.
# Finds the longest k such that the stored tail's last k messages equal the first k
# incoming ones (role and content), appends the rest, counts new user turns, and
# answers {skipped, length, watermark, first index read, summary, summarizing now (0/1),
# messages after the watermark (capped)...}: the summary and its watermark are read
# together, so they match.
_APPEND_SCRIPT = LuaScript("""
local incoming = cjson.decode(ARGV[2])
local n = #incoming
local stored = redis.call('LLEN', KEYS[1])
local m = math.min(n, stored)
local skip = 0
if m > 0 then
  local tail = {}
  for i, raw in ipairs(redis.call('LRANGE', KEYS[1], -m, -1)) do tail[i] = cjson.decode(raw) end
  for k = m, 1, -1 do
    local same = true
    for j = 1, k do
      local s, x = tail[m - k + j], incoming[j]
      if s.role ~= x.role or s.content ~= x.content then same = false break end
    end
    if same then skip = k break end
  end
end
local users = 0
for j = skip + 1, n do
  redis.call('RPUSH', KEYS[1], ARGV[4 + j])
  if incoming[j].role == 'user' then users = users + 1 end
end
if users > 0 then redis.call('HINCRBY', KEYS[2], 'user_turns', users) end
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
local length = redis.call('LLEN', KEYS[1])
local watermark = tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1')
local first = math.max(watermark + 1, length - tonumber(ARGV[4]))
local window = {}
if first < length then window = redis.call('LRANGE', KEYS[1], first, -1) end
local answer = {skip, length, watermark, first, redis.call('HGET', KEYS[2], 'summary') or '',
                redis.call('EXISTS', KEYS[3])}
for _, raw in ipairs(window) do answer[#answer + 1] = raw end
return answer
""")

# KEYS: messages list, meta hash. ARGV: expected watermark, new watermark, summary,
# summary tokens, timestamp. Replaces the summary only if nobody moved the watermark
# meanwhile and the session still exists; messages after the new watermark are
# untouched, so turns that arrived during summarization are never lost.
_SAVE_SUMMARY_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[2], 'summary_upto') or '-1')
if current ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'summary', ARGV[3], 'summary_upto', ARGV[2],
           'summary_tokens', ARGV[4], 'summary_at', ARGV[5], 'summary_error', '',
           'summary_failed_at', '')
return 1
""")

# KEYS: meta hash. ARGV: error, timestamp. A deleted session stays deleted.
_RECORD_FAILURE_SCRIPT = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'summary_error', ARGV[1], 'summary_failed_at', ARGV[2])
return 1
""")


class StoredMessage(BaseModel):
    role: Role
    content: str
    at: float
    tokens: int = 0
    cut: bool = False
    greeting: bool = False


class SessionMeta(BaseModel):
    session_id: str
    owner: str | None = None
    character_id: str | None = None
    persona: str | None = None
    scenario: dict[str, Any] | None = None
    created_at: float | None = None
    user_turns: int = 0
    summary: str | None = None
    summary_upto: int = -1
    summary_tokens: int = 0
    summary_at: float | None = None
    summary_error: str | None = None
    summary_failed_at: float | None = None


class Window(BaseModel):
    """What a turn reads: the transcript after the summary's watermark."""

    skipped: int
    length: int
    watermark: int
    first_index: int
    summary: str | None
    summarizing: bool
    """A summary is being made right now (its lock is held): no need to ask for another."""
    messages: list[StoredMessage]

    @property
    def unread(self) -> int:
        """Messages after the watermark that the cap left out of `messages`."""
        return self.first_index - (self.watermark + 1)


def now() -> float:
    return round(time.time(), 3)


def _float(value: str | None) -> float | None:
    return float(value) if value else None


class SessionStore:
    async def load_meta(self, session_id: str) -> SessionMeta | None:
        found = await (await get_redis()).hgetall(redis_keys().session(session_id))
        raw = {str(k): str(v) for k, v in found.items()}
        if not raw:
            return None
        return SessionMeta(
            session_id=session_id,
            owner=raw.get("owner"),
            character_id=raw.get("character_id") or None,
            persona=raw.get("persona") or None,
            scenario=json.loads(raw["scenario"]) if raw.get("scenario") else None,
            created_at=_float(raw.get("created_at")),
            user_turns=int(raw.get("user_turns", 0)),
            summary=raw.get("summary") or None,
            summary_upto=int(raw.get("summary_upto", -1)),
            summary_tokens=int(raw.get("summary_tokens") or 0),
            summary_at=_float(raw.get("summary_at")),
            summary_error=raw.get("summary_error") or None,
            summary_failed_at=_float(raw.get("summary_failed_at")),
        )

    async def save_setup(
        self, session_id: str, *, owner: str, character_id: str | None, persona: str | None,
        scenario: dict[str, Any] | None,
    ) -> None:
        """Remembers who the session talks to, so later turns may leave it out."""
        fields: dict[str, str] = {
            "owner": owner, "character_id": character_id or "", "persona": persona or "",
            "scenario": json.dumps(scenario, ensure_ascii=False) if scenario else ""}
        keys, redis = redis_keys(), await get_redis()
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.session(session_id), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.session(session_id), get_settings().session_ttl_s)
            await pipe.execute()

    async def append_turns(self, session_id: str, messages: list[StoredMessage]) -> Window:
        """Appends what is new in `messages` and reads the window, in one round trip."""
        keys = redis_keys()
        encoded = [m.model_dump_json(exclude_defaults=True) for m in messages]
        incoming = json.dumps([{"role": m.role, "content": m.content} for m in messages],
                              ensure_ascii=False)
        answer = await _APPEND_SCRIPT(
            [keys.session_messages(session_id), keys.session(session_id), keys.summary_lock(session_id)],
            [get_settings().session_ttl_s, incoming, now(), WINDOW_CAP, *encoded],
        )
        skip, length, watermark, first, summary, summarizing, *window = answer
        return Window(skipped=int(skip), length=int(length), watermark=int(watermark),
                      first_index=int(first), summary=summary or None,
                      summarizing=bool(summarizing),
                      messages=[StoredMessage.model_validate_json(raw) for raw in window])

    async def read_window(self, session_id: str) -> Window:
        """The window alone (appending nothing), after a summary moved the watermark."""
        return await self.append_turns(session_id, [])

    async def append_reply(self, session_id: str, message: StoredMessage) -> int:
        """Stores the character's reply; answers the transcript's new length."""
        keys, redis = redis_keys(), await get_redis()
        ttl = get_settings().session_ttl_s
        async with redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.session_messages(session_id), message.model_dump_json(exclude_defaults=True))
            pipe.expire(keys.session_messages(session_id), ttl)
            pipe.expire(keys.session(session_id), ttl)
            length, _, _ = await pipe.execute()
        return int(length)

    async def length(self, session_id: str) -> int:
        return int(await (await get_redis()).llen(redis_keys().session_messages(session_id)))

    async def read_range(self, session_id: str, first: int, last: int) -> list[StoredMessage]:
        """Messages `first`..`last` (inclusive, 0-based) of the transcript."""
        raw = await (await get_redis()).lrange(redis_keys().session_messages(session_id), first, last)
        return [StoredMessage.model_validate_json(item) for item in raw]

    async def transcript(self, session_id: str) -> list[StoredMessage]:
        return await self.read_range(session_id, 0, -1)

    async def save_summary(
        self, session_id: str, *, expected_upto: int, upto: int, summary: str, tokens: int
    ) -> bool:
        """Moves the watermark from `expected_upto` to `upto`; False if it had moved."""
        keys = redis_keys()
        saved = await _SAVE_SUMMARY_SCRIPT(
            [keys.session_messages(session_id), keys.session(session_id)],
            [expected_upto, upto, summary, tokens, now()],
        )
        return bool(saved)

    async def record_summary_failure(self, session_id: str, error: str) -> None:
        """Keeps the old summary; notes why and when, so a later turn retries."""
        await _RECORD_FAILURE_SCRIPT([redis_keys().session(session_id)], [error[:500], now()])

    async def delete(self, session_id: str) -> bool:
        keys, redis = redis_keys(), await get_redis()
        removed = await redis.delete(keys.session(session_id), keys.session_messages(session_id),
                                     keys.summary_lock(session_id))
        return bool(removed)

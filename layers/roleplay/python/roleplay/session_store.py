"""Conversation sessions in Redis: the server's transcript is the source of truth.

The transcript is append-only and never trimmed. New turns are appended by one Lua
script, so two requests racing on a session cannot interleave a read and a write:
each batch lands whole, in arrival order. The script also drops the part of a
request that repeats the stored tail, so a client that re-sends the whole
conversation (as the design document's frontend does), or retries after an upstream
failure, never stores a message twice.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel

from roleplay.redis_client import get_redis
from roleplay.redis_keys import redis_keys
from roleplay.settings import get_settings

Role = Literal["user", "assistant", "system"]

# KEYS: messages list, meta hash. ARGV: ttl seconds, JSON array of messages.
# Finds the longest k such that the stored tail's last k messages equal the first k
# incoming ones (role and content), appends the rest, counts new user turns.
_APPEND_SCRIPT = """
local incoming = cjson.decode(ARGV[2])
local n = #incoming
local stored = redis.call('LLEN', KEYS[1])
local tail = {}
local m = math.min(n, stored)
if m > 0 then
  for i, raw in ipairs(redis.call('LRANGE', KEYS[1], -m, -1)) do tail[i] = cjson.decode(raw) end
end
local skip = 0
for k = m, 1, -1 do
  local same = true
  for j = 1, k do
    local s, x = tail[m - k + j], incoming[j]
    if s.role ~= x.role or s.content ~= x.content then same = false break end
  end
  if same then skip = k break end
end
local users = 0
for j = skip + 1, n do
  redis.call('RPUSH', KEYS[1], ARGV[2 + j])
  if incoming[j].role == 'user' then users = users + 1 end
end
if users > 0 then redis.call('HINCRBY', KEYS[2], 'user_turns', users) end
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[1 + n + 2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {skip, redis.call('LLEN', KEYS[1])}
"""


class StoredMessage(BaseModel):
    role: Role
    content: str
    at: float
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


class AppendResult(BaseModel):
    skipped: int
    length: int


def now() -> float:
    return round(time.time(), 3)


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
            created_at=float(raw["created_at"]) if raw.get("created_at") else None,
            user_turns=int(raw.get("user_turns", 0)),
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

    async def append_turns(self, session_id: str, messages: list[StoredMessage]) -> AppendResult:
        keys, redis = redis_keys(), await get_redis()
        encoded = [m.model_dump_json(exclude_defaults=True) for m in messages]
        array = "[" + ",".join(encoded) + "]"
        skip, length = await redis.eval(
            _APPEND_SCRIPT, 2, keys.session_messages(session_id), keys.session(session_id),
            get_settings().session_ttl_s, array, *encoded, now(),
        )
        return AppendResult(skipped=int(skip), length=int(length))

    async def append_reply(self, session_id: str, message: StoredMessage) -> int:
        keys, redis = redis_keys(), await get_redis()
        ttl = get_settings().session_ttl_s
        async with redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.session_messages(session_id), message.model_dump_json(exclude_defaults=True))
            pipe.expire(keys.session_messages(session_id), ttl)
            pipe.expire(keys.session(session_id), ttl)
            length, _, _ = await pipe.execute()
        return int(length)

    async def transcript(self, session_id: str) -> list[StoredMessage]:
        raw = await (await get_redis()).lrange(redis_keys().session_messages(session_id), 0, -1)
        return [StoredMessage.model_validate_json(item) for item in raw]

    async def delete(self, session_id: str) -> bool:
        keys, redis = redis_keys(), await get_redis()
        removed = await redis.delete(keys.session(session_id), keys.session_messages(session_id))
        return bool(removed)

"""Per-user quotas: requests per minute, tokens per day, seconds of speech per day.

Atomic in Redis, like the user cap, so every instance counts the same: one script
checks the minute's request count and the day's totals and takes the request in the
same step. Tokens and speech are known only after the fact, so they are added when the
reply (or audio) exists, and a user who is over is refused from the next request on.
Days are UTC days. Over a quota: 429 with Retry-After and the quota named in
`details`. All three are off by default (0), and then nothing here touches Redis. A
signed-in admin (`User.is_admin`) is exempt.

Every door that generates or speaks takes its one request here, once: a turn of any
kind (`/api/chat`, regenerate, continue, `/v1` session turns) in `chat.preparation`,
as a speech request when it will speak its reply; a `/v1` pass-through, impersonation
or quiet prompt in `openai_compat.chat_completions`; `/api/tts` and `/v1/audio/speech`
in `speech.allowance`.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from roleplay.core.errors import TooManyRequests
from roleplay.core.identity import User
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import Settings, get_settings

DAY_S = 86400
Kind = Literal["chat", "tts"]

# KEYS: minute counter, day tokens, day speech seconds. ARGV: rpm, tokens/day, tts s/day,
# whether speech counts for this request (0/1). Answers {0} or {the quota refused (1 rpm,
# 2 tokens, 3 speech)}; a refused request is not counted.
_CHECK = LuaScript("""
local tokens = tonumber(ARGV[2])
if tokens > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tokens then return {2} end
local speech = tonumber(ARGV[3])
if ARGV[4] == '1' and speech > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= speech then
  return {3}
end
local rpm = tonumber(ARGV[1])
if rpm > 0 then
  local count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], 61) end
  if count > rpm then
    redis.call('DECR', KEYS[1])
    return {1}
  end
end
return {0}
""")


def _enabled(settings: Settings, kind: Kind) -> bool:
    return bool(settings.user_rpm or settings.user_tokens_per_day
                or (kind == "tts" and settings.user_tts_seconds_per_day))


def _keys(user_id: str, now: float) -> tuple[str, str, str]:
    return redis_keys().quotas(user_id, int(now // 60), int(now // DAY_S))


def _refusal(which: int, settings: Settings, now: float) -> TooManyRequests:
    next_day = math.ceil((now + 1) / DAY_S) * DAY_S - now
    quota, limit, retry, what = {
        1: ("USER_RPM", settings.user_rpm, 60 - now % 60, "requests this minute"),
        2: ("USER_TOKENS_PER_DAY", settings.user_tokens_per_day, next_day, "tokens today"),
        3: ("USER_TTS_SECONDS_PER_DAY", settings.user_tts_seconds_per_day, next_day,
            "seconds of speech today"),
    }[which]
    retry_after = max(1, math.ceil(retry))
    return TooManyRequests(
        f"you have used your {limit:g} {what} ({quota}); try again in {retry_after} s",
        code="quota_exceeded", headers={"Retry-After": str(retry_after)},
        details={"quota": quota, "limit": limit, "retry_after_s": retry_after})


async def check(user: User, kind: Kind) -> None:
    """Takes one request against the user's quotas, or raises 429 `quota_exceeded`."""
    settings = get_settings()
    if user.is_admin or not _enabled(settings, kind):
        return
    now = time.time()
    (which,) = await _CHECK(list(_keys(user.id, now)), [
        settings.user_rpm, settings.user_tokens_per_day, settings.user_tts_seconds_per_day,
        1 if kind == "tts" else 0])
    if int(which):
        raise _refusal(int(which), settings, now)


async def add_tokens(user: User, tokens: int) -> None:
    """Counts what the upstream reported for a reply (prompt + completion)."""
    settings = get_settings()
    if user.is_admin or not settings.user_tokens_per_day or tokens <= 0:
        return
    key = _keys(user.id, time.time())[1]
    redis = await get_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, 2 * DAY_S)
        await pipe.execute()


async def add_speech(user: User, seconds: float) -> None:
    settings = get_settings()
    if user.is_admin or not settings.user_tts_seconds_per_day or seconds <= 0:
        return
    key = _keys(user.id, time.time())[2]
    redis = await get_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrbyfloat(key, round(seconds, 3))
        pipe.expire(key, 2 * DAY_S)
        await pipe.execute()

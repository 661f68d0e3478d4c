"""How many syntheses one user runs at once (`TTS_MAX_CONCURRENT_PER_USER`, default 2),
counted in Redis so that every instance agrees.

Speech is the costly request (a GPU on Server A, or the one eSpeak NG engine of a
process): without a bound one user's forty queued calls are forty in everyone's way.
A call past the bound waits up to `TTS_BUSY_WAIT_S` (2 s) for a place, polling, then
answers 429 `tts_busy` with `Retry-After`. Each place is a lease in a per-user sorted
set scored by its expiry, so a place whose holder died frees itself once the longest
synthesis could have ended (connect + read + weights-lock timeouts).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from roleplay.core.errors import ApiError
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

# KEYS: the user's leases (member → expiry ms). ARGV: lease id, bound, lease ms.
# Drops expired leases, then takes one if fewer than the bound are held. Answers 1 when
# taken, else 0. Time is Redis's clock, as in the concurrent-user cap.
_ACQUIRE_SCRIPT = LuaScript("""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""")

POLL_S = (0.02, 0.05, 0.1, 0.2)
"""Waits between tries, then the last one repeated."""


class SpeechBusy(ApiError):
    status_code = 429
    code = "tts_busy"

    def __init__(self, bound: int) -> None:
        super().__init__(
            f"you already have {bound} speech requests running; try again shortly "
            "(TTS_MAX_CONCURRENT_PER_USER)",
            headers={"Retry-After": "1"}, details={"max_concurrent_per_user": bound})


def _lease_ms() -> int:
    settings = get_settings()
    longest = settings.tts_connect_timeout_s + settings.tts_read_timeout_s + settings.tts_lock_timeout_s
    return max(1000, round(longest * 1000))


@asynccontextmanager
async def speech_slot(user_id: str) -> AsyncIterator[None]:
    """Holds one of `user_id`'s places for the block; SpeechBusy if none frees in time."""
    settings = get_settings()
    bound = settings.tts_max_concurrent_per_user
    key, lease = redis_keys().tts_busy(user_id), secrets.token_hex(8)
    deadline = time.monotonic() + settings.tts_busy_wait_s
    tries = 0
    while not await _ACQUIRE_SCRIPT([key], [lease, bound, _lease_ms()]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SpeechBusy(bound)
        await asyncio.sleep(min(POLL_S[min(tries, len(POLL_S) - 1)], remaining))
        tries += 1
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await (await get_redis()).zrem(key, lease)

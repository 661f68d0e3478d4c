"""Upstream failover and circuit breakers, shared by every instance through Redis.

A call to Server A goes to the first base URL whose breaker is closed. If it fails
before any byte of the answer (a connect error, or a 502/503), it is tried once more
after a short jitter: on the next base URL when several are configured
(`LLM_BASE_URLS`, `TTS_BASE_URLS`), else on the same one. Nothing is retried once a
streamed reply has begun, nor after a timeout (the upstream may have done the work).

Each base URL has a breaker, about the upstream and not about any one caller. It opens
for BREAKER_COOLOFF_S after BREAKER_FAILURES failures in a row (no success between):
- failures that say the server cannot serve anyone (unreachable, a 502 or 503) open it
  on their own;
- failures a request can bring on itself (a timeout, as a huge `max_tokens` or a long
  prompt does, or another 5xx) open it only when the run holds failures of at least
  BREAKER_MIN_USERS callers (the signed-in user, or the anonymous client, the request's
  log line names), so one user's slow requests never pause the upstream for everyone;
- a full connection pool (our own, not the upstream's) and unusable answers never count.

An open breaker closes only when its time is up: a success ends a run of failures but
never an open state (a reply to a request sent before the breaker opened, while an
instance's cache still said closed, proves little), compared and set in one script.
No request is sent to an open upstream; after the cool-off, requests may try it again.
The state is in Redis so every instance sees it, read through a one-second cache so a
healthy upstream costs no round trip per call; a turn reads a stale one beside its session
(`stale_breakers`), not after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from roleplay.core import request_context
from roleplay.core.errors import ApiError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

T = TypeVar("T")
RETRY_STATUSES = frozenset({502, 503})
CACHE_S = 1.0
JITTER_S = (0.05, 0.25)

# KEYS: the breaker hash. ARGV: 1 failures that open it, 2 cool-off s, 3 now, 4 the
# failure's kind ('down' counts on its own, 'failed' only among enough callers), 5 the
# caller, 6 callers needed. A failure while open changes nothing. Opening clears the run.
# Answers the time it is open until (0 while still closed).
_FAILED = LuaScript("""
local now = tonumber(ARGV[3])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > now then return tostring(open_until) end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local down = tonumber(redis.call('HGET', KEYS[1], 'down') or '0')
if ARGV[4] == 'down' then down = redis.call('HINCRBY', KEYS[1], 'down', 1) end
local callers = tonumber(redis.call('HGET', KEYS[1], 'callers') or '0')
if redis.call('HSETNX', KEYS[1], 'caller:' .. ARGV[5], '1') == 1 then
  callers = redis.call('HINCRBY', KEYS[1], 'callers', 1)
end
local needed = tonumber(ARGV[1])
local until_ = 0
if down >= needed or (failures >= needed and callers >= tonumber(ARGV[6])) then
  until_ = now + tonumber(ARGV[2])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'open_until', tostring(until_))
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 10))
return tostring(until_)
""")

# KEYS: the breaker hash. ARGV: now. A success ends the run of failures, unless the
# breaker is open: then nothing changes (it closes when its time is up). Answers the time
# it is open until (0: closed).
_SUCCEEDED = LuaScript("""
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > tonumber(ARGV[1]) then return tostring(open_until) end
redis.call('DEL', KEYS[1])
return '0'
""")

UNKNOWN_CALLER = "-"
"""Calls made outside a request (a background summary, a probe): one caller between them."""
POOL_EXHAUSTED = "pool_exhausted"
"""An `UpstreamUnavailable`'s `details["cause"]` when our own connection pool was full."""
Fault = Literal["down", "failed"]


@dataclass(frozen=True)
class BreakerState:
    failures: int
    open_until: float

    def is_open(self, now: float) -> bool:
        return self.open_until > now


_cache: dict[str, tuple[BreakerState, float]] = {}


def _key(url: str) -> str:
    return redis_keys().breaker(hashlib.sha1(url.encode()).hexdigest()[:16])


async def breaker_state(url: str) -> BreakerState:
    key = _key(url)
    cached = _cache.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    failures, open_until = await (await get_redis()).hmget(key, ["failures", "open_until"])
    state = BreakerState(int(failures or 0), float(open_until or 0))
    _cache[key] = (state, time.monotonic() + CACHE_S)
    return state


def stale_breakers(urls: Sequence[str]) -> Coroutine[Any, Any, None] | None:
    """A read of the breakers whose cached state has gone stale (None: none has), for a
    caller to await beside the reads it makes anyway before the call. The call then finds
    them fresh: a turn that comes after a pause (most turns of one conversation) waits
    for one round trip fewer before the upstream, and the breaker is read as before."""
    now = time.monotonic()
    stale = [url for url in urls if (cached := _cache.get(_key(url))) is None or cached[1] <= now]
    return _read_breakers(stale) if stale else None


async def _read_breakers(urls: Sequence[str]) -> None:
    for url in urls:
        await breaker_state(url)


def _caller() -> str:
    """Who the current call is for: the user the request's log line names (hashed)."""
    record = request_context.current()
    user = record.fields.get("user") if record is not None else None
    return str(user) if user else UNKNOWN_CALLER


async def _failed(url: str, fault: Fault) -> None:
    settings = get_settings()
    key = _key(url)
    until = float(await _FAILED([key], [
        settings.breaker_failures, settings.breaker_cooloff_s, time.time(), fault, _caller(),
        settings.breaker_min_users]))
    cached = _cache.get(key)
    failures = (cached[0].failures if cached else 0) + 1
    _cache[key] = (BreakerState(0 if until else failures, until), time.monotonic() + CACHE_S)


async def _succeeded(url: str) -> None:
    key = _key(url)
    cached = _cache.get(key)
    until = 0.0
    if cached is None or cached[0].failures or cached[0].open_until:
        until = float(await _SUCCEEDED([key], [time.time()]))
    _cache[key] = (BreakerState(0, until), time.monotonic() + CACHE_S)


def _status(error: ApiError) -> int | None:
    details = error.details if isinstance(error.details, dict) else {}
    status = details.get("upstream_status")
    return int(status) if status is not None else None


def _local(error: ApiError) -> bool:
    return isinstance(error.details, dict) and error.details.get("cause") == POOL_EXHAUSTED


def _fault(error: ApiError) -> Fault | None:
    """What a failure says about the upstream: `down` (it serves nobody), `failed` (maybe
    this request's own doing), or nothing (an answer we cannot use is about that request;
    a full pool is ours)."""
    if _local(error):
        return None
    if isinstance(error, UpstreamUnavailable):
        return "down"
    if isinstance(error, UpstreamTimeout):
        return "failed"
    status = _status(error)
    if not isinstance(error, UpstreamError) or status is None or status < 500:
        return None
    return "down" if status in RETRY_STATUSES else "failed"


def _retryable(error: ApiError) -> bool:
    if isinstance(error, UpstreamUnavailable):
        return not _local(error)
    return isinstance(error, UpstreamError) and _status(error) in RETRY_STATUSES


async def with_failover(name: str, urls: Sequence[str], call: Callable[[str], Awaitable[T]]) -> T:
    """`call(base_url)` on the first closed upstream, retried once as the module says."""
    now = time.time()
    states = [await breaker_state(url) for url in urls]
    closed = [url for url, state in zip(urls, states, strict=True) if not state.is_open(now)]
    if not closed:
        retry = max(1, round(min(s.open_until for s in states) - now))
        raise UpstreamUnavailable(
            f"{name}: every upstream failed repeatedly and is paused (circuit breaker open)",
            code="upstream_circuit_open", headers={"Retry-After": str(retry)},
            details={"retry_after_s": retry})
    attempts = closed[:2] if len(closed) > 1 else [closed[0], closed[0]]
    for attempt, url in enumerate(attempts):
        try:
            result = await call(url)
        except ApiError as error:
            fault = _fault(error)
            if fault is not None:
                await _failed(url, fault)
            if not _retryable(error) or attempt == len(attempts) - 1:
                raise
            await asyncio.sleep(random.uniform(*JITTER_S))
            continue
        await _succeeded(url)
        return result
    raise AssertionError("unreachable: the last attempt returns or raises")


async def breaker_report(urls: Sequence[str]) -> dict[str, str]:
    """`closed` or `open` per base URL, for health (URLs as configured; redact before showing)."""
    now = time.time()
    return {url: "open" if (await breaker_state(url)).is_open(now) else "closed" for url in urls}


def base_urls(single: str | None, many: str | None) -> list[str]:
    """The failover list: `*_BASE_URLS` when set, else the one `*_BASE_URL`."""
    if many:
        return [url.strip() for url in many.split(",") if url.strip()]
    return [single] if single else []

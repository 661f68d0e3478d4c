"""Upstream failover and circuit breakers, shared by every instance through Redis.

A call to Server A goes to the first base URL whose breaker is closed. If it fails
before any byte of the answer (a connect error, or a 502/503), it is tried once more
after a short jitter: on the next base URL when several are configured
(`LLM_BASE_URLS`, `TTS_BASE_URLS`), else on the same one. Nothing is retried once a
streamed reply has begun, nor after a timeout (the upstream may have done the work).

Each base URL has a breaker: BREAKER_FAILURES failures in a row (connect errors,
timeouts, 5xx answers; not answers that are merely unusable) open it for
BREAKER_COOLOFF_S, during which no request is sent there; then one request may try it
again. Its state is in Redis so every instance sees it,
read through a one-second cache so a healthy upstream costs no round trip per call.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from roleplay.core.errors import ApiError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings

T = TypeVar("T")
RETRY_STATUSES = frozenset({502, 503})
CACHE_S = 1.0
JITTER_S = (0.05, 0.25)

# KEYS: the breaker hash. ARGV: failures that open it, cool-off s, now. Answers the time it
# is open until (0 while still closed).
_FAILED = LuaScript("""
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local until_ = 0
if failures >= tonumber(ARGV[1]) then
  until_ = tonumber(ARGV[3]) + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'open_until', tostring(until_), 'failures', 0)
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 10))
return tostring(until_)
""")


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


async def _failed(url: str) -> None:
    settings = get_settings()
    key = _key(url)
    until = float(await _FAILED([key], [settings.breaker_failures, settings.breaker_cooloff_s,
                                        time.time()]))
    cached = _cache.get(key)
    failures = (cached[0].failures if cached else 0) + 1
    _cache[key] = (BreakerState(0 if until else failures, until), time.monotonic() + CACHE_S)


async def _succeeded(url: str) -> None:
    key = _key(url)
    cached = _cache.get(key)
    if cached is None or cached[0].failures or cached[0].open_until:
        await (await get_redis()).delete(key)
    _cache[key] = (BreakerState(0, 0.0), time.monotonic() + CACHE_S)


def _counts_as_failure(error: ApiError) -> bool:
    if isinstance(error, UpstreamUnavailable | UpstreamTimeout):
        return True
    status = (error.details or {}).get("upstream_status") if isinstance(error.details, dict) else None
    # An answer we cannot use (not JSON, silent audio) is about that request, not the server.
    return isinstance(error, UpstreamError) and status is not None and int(status) >= 500


def _retryable(error: ApiError) -> bool:
    if isinstance(error, UpstreamUnavailable):
        return True
    status = (error.details or {}).get("upstream_status") if isinstance(error.details, dict) else None
    return isinstance(error, UpstreamError) and status in RETRY_STATUSES


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
            if _counts_as_failure(error):
                await _failed(url)
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

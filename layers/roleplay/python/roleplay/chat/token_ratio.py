"""How far the local cl100k estimate is from each model's real tokenizer.

The upstream reports `usage.prompt_tokens` for the prompt we estimated; the ratio of
the two, averaged over recent turns and shared by every instance through Redis,
corrects later estimates. Reads are cached in-process for a minute so a turn does
not pay a round trip for a number that moves slowly.

Only models the upstream serves or the operator configured (`served_models.known_model`)
are remembered, in Redis or here: a name a client made up stays at 1.0 and leaves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any, NamedTuple

from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.llm.served_models import known_model

MIN_RATIO, MAX_RATIO = 0.5, 3.0
SMOOTHING = 0.2
CACHE_S = 60.0
OBSERVE_EVERY_S = 10.0
"""A process writes its average to the shared one at most this often per model (counted
from its last read or write of it). Each turn moves the process's own copy at once (the
same smoothing), so its next estimate is corrected straight away, and the script call
(about 4% of a text turn's CPU) is paid once per interval instead of once per turn.
Instances share the latest average written: each is an average of the same model's turns."""

# KEYS: ratios hash. ARGV: model, observed ratio, smoothing, min, max.
_OBSERVE_SCRIPT = LuaScript("""
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
local seen = tonumber(ARGV[2])
local new = seen
if old then new = old + tonumber(ARGV[3]) * (seen - old) end
new = math.max(tonumber(ARGV[4]), math.min(tonumber(ARGV[5]), new))
redis.call('HSET', KEYS[1], ARGV[1], tostring(new))
return tostring(new)
""")


class _Held(NamedTuple):
    ratio: float
    fresh_until: float
    """`CACHE_S` after it was last read from or written to Redis (monotonic seconds)."""
    learned: bool
    """False for the 1.0 of a model nobody has measured yet."""


_cache: dict[tuple[str, str], _Held] = {}


def _clamp(ratio: float) -> float:
    return max(MIN_RATIO, min(MAX_RATIO, ratio))


async def token_ratio(model: str) -> float:
    """upstream tokens per local token for `model`; 1.0 until the upstream has told us."""
    if not known_model(model):
        return 1.0
    key = (redis_keys().token_ratios, model)
    cached = _cache.get(key)
    if cached and cached.fresh_until > time.monotonic():
        return cached.ratio
    raw = await (await get_redis()).hget(key[0], model)
    ratio = _clamp(float(raw)) if raw else 1.0
    _cache[key] = _Held(ratio, time.monotonic() + CACHE_S, bool(raw))
    return ratio


async def observe_prompt_tokens(model: str, local_estimate: int, upstream_tokens: int | None,
                                *, at_once: bool = False) -> None:
    """Folds one turn's measured ratio into the model's running average: this process's
    copy at once, the shared one when `OBSERVE_EVERY_S` has passed, nothing was learned
    yet (the first measure is taken whole, as before), or `at_once` (a prompt the
    upstream refused as too long)."""
    share = fold_prompt_tokens(model, local_estimate, upstream_tokens, at_once=at_once)
    if share is not None:
        await share


def fold_prompt_tokens(model: str, local_estimate: int, upstream_tokens: int | None,
                       *, at_once: bool = False) -> Coroutine[Any, Any, None] | None:
    """`observe_prompt_tokens`, its Redis write handed back to await (None: nothing to
    write, the common case): a turn then waits on it beside its reply's store, and starts
    no task when there is none."""
    if not upstream_tokens or local_estimate <= 0 or not known_model(model):
        return None
    key = (redis_keys().token_ratios, model)
    seen = upstream_tokens / local_estimate
    held = _cache.get(key)
    smoothing = SMOOTHING
    if held is not None and held.learned:
        # The process's copy already averages its turns: the shared one takes it whole.
        seen, smoothing = _clamp(held.ratio + SMOOTHING * (seen - held.ratio)), 1.0
        synced_at = held.fresh_until - CACHE_S
        if not at_once and time.monotonic() - synced_at < OBSERVE_EVERY_S:
            _cache[key] = held._replace(ratio=seen)
            return None
    return _share(key, model, seen, smoothing)


async def _share(key: tuple[str, str], model: str, seen: float, smoothing: float) -> None:
    new = await _OBSERVE_SCRIPT([key[0]], [model, seen, smoothing, MIN_RATIO, MAX_RATIO])
    _cache[key] = _Held(float(new), time.monotonic() + CACHE_S, True)


def corrected(local_tokens: int, ratio: float) -> int:
    """A local estimate in the model's tokens, rounded up: budgets err on the safe side."""
    return -(-local_tokens * round(ratio * 1000) // 1000)

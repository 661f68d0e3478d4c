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

from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.llm.served_models import known_model

MIN_RATIO, MAX_RATIO = 0.5, 3.0
SMOOTHING = 0.2
CACHE_S = 60.0
OBSERVE_EVERY_S = 10.0
"""A process folds a turn's ratio into the shared average at most this often per model
while the turn's ratio is within `NEAR` of the average it holds: a steady stream of turns
that agree saves a script call each (about 3% of a text turn's CPU). A turn that strays
further is folded in at once."""
NEAR = 0.05

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

_cache: dict[tuple[str, str], tuple[float, float]] = {}


def _clamp(ratio: float) -> float:
    return max(MIN_RATIO, min(MAX_RATIO, ratio))


async def token_ratio(model: str) -> float:
    """upstream tokens per local token for `model`; 1.0 until the upstream has told us."""
    if not known_model(model):
        return 1.0
    key = (redis_keys().token_ratios, model)
    cached = _cache.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    raw = await (await get_redis()).hget(key[0], model)
    ratio = _clamp(float(raw)) if raw else 1.0
    _cache[key] = (ratio, time.monotonic() + CACHE_S)
    return ratio


async def observe_prompt_tokens(model: str, local_estimate: int, upstream_tokens: int | None) -> None:
    """Folds one turn's measured ratio into the model's running average."""
    if not upstream_tokens or local_estimate <= 0 or not known_model(model):
        return
    key = redis_keys().token_ratios
    seen = upstream_tokens / local_estimate
    held = _cache.get((key, model))
    if (held is not None and held[1] - CACHE_S + OBSERVE_EVERY_S > time.monotonic()
            and abs(seen - held[0]) <= NEAR * held[0]):
        return
    new = await _OBSERVE_SCRIPT([key], [model, seen, SMOOTHING, MIN_RATIO, MAX_RATIO])
    _cache[(key, model)] = (float(new), time.monotonic() + CACHE_S)


def corrected(local_tokens: int, ratio: float) -> int:
    """A local estimate in the model's tokens, rounded up: budgets err on the safe side."""
    return -(-local_tokens * round(ratio * 1000) // 1000)

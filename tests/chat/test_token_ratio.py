"""`roleplay.chat.token_ratio` against a real Redis: each turn corrects this process's ratio
at once, and the shared average in Redis is written at most every `OBSERVE_EVERY_S`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from roleplay.chat import token_ratio
from roleplay.core.redis_client import redis_holder
from roleplay.core.redis_keys import redis_keys

MODEL = "gemma-3-27b-it"
"""The default model: configured, so its ratio is remembered."""


@pytest.fixture(autouse=True)
def fresh_ratios() -> Iterator[None]:
    token_ratio._cache.clear()
    yield
    token_ratio._cache.clear()


def _observe_all(*turns: tuple[int, int]) -> float:
    """Observes `(local estimate, upstream tokens)` turns in order; answers the ratio the
    next turn of this process would plan with."""
    async def observe() -> float:
        try:
            for local, upstream in turns:
                await token_ratio.observe_prompt_tokens(MODEL, local, upstream)
            return await token_ratio.token_ratio(MODEL)
        finally:
            await redis_holder.close()

    return asyncio.run(observe())


def _shared(sync_redis: redis.Redis) -> float:
    return float(sync_redis.hget(redis_keys().token_ratios, MODEL))


def test_the_first_turn_is_shared_and_later_ones_move_only_this_process_for_a_while(
        sync_redis: redis.Redis) -> None:
    assert _observe_all() == 1.0, "nothing learned yet"
    ratio = _observe_all((100, 150), (100, 200), (100, 200))
    assert _shared(sync_redis) == pytest.approx(1.5), "the first measure went to Redis, whole"
    assert ratio == pytest.approx(1.5 + 0.2 * 0.5 + 0.2 * (2.0 - 1.6)), \
        "each later turn moved this process's ratio at once, with the usual smoothing"


def test_the_process_average_is_shared_once_the_interval_has_passed(
        sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_ratio, "OBSERVE_EVERY_S", 0.0)
    ratio = _observe_all((100, 150), (100, 200))
    assert ratio == pytest.approx(1.6)
    assert _shared(sync_redis) == pytest.approx(1.6), "the process's average, written whole"


def test_a_prompt_refused_as_too_long_is_shared_at_once(sync_redis: redis.Redis) -> None:
    async def observe() -> None:
        try:
            await token_ratio.observe_prompt_tokens(MODEL, 100, 150)
            await token_ratio.observe_prompt_tokens(MODEL, 100, 250, at_once=True)
        finally:
            await redis_holder.close()

    asyncio.run(observe())
    assert _shared(sync_redis) == pytest.approx(1.5 + 0.2 * 1.0)

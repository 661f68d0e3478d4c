"""What the LLM upstream really allows each model: its context length, and whether it sees.

`MAX_CONTEXT_TOKENS` is what Server B would like; the upstream's context is what it
gets. Each server says it differently: vLLM's `max_model_len` on `/v1/models`,
llama.cpp's native server `n_ctx` on `/props`, Ollama's `<arch>.context_length` and
`capabilities` on `/api/show` (each read by its dialect, `llm.dialect`). llama-cpp-python's
server says nothing, so whoever starts it (the local runner) sets `LLM_CONTEXT_LENGTH`.

Read at first use and kept per process; an answer that failed is asked again after
`RETRY_S`, and `forget` (called when the upstream refuses a prompt as too long) makes
the next turn ask again. Clamping is logged once per model.
"""

from __future__ import annotations

import logging
import time

from roleplay.core.errors import ApiError
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.answers import ModelLimits
from roleplay.llm.served_models import served_models

logger = logging.getLogger("roleplay.llm.upstream_limits")

RETRY_S = 30.0
"""How long an upstream that could not say is taken at `MAX_CONTEXT_TOKENS`' word."""


_cache: dict[tuple[str, str, str], tuple[ModelLimits, float]] = {}
_logged: set[tuple[str, str, int, int]] = set()


async def model_limits(model: str, settings: Settings | None = None) -> ModelLimits:
    """The upstream's own limits for `model`, cached; never raises (unknown is an answer)."""
    settings = settings or get_settings()
    if not settings.llm_base_url:  # nothing to ask (a stored greeting needs no LLM)
        return ModelLimits()
    base = _base_url(settings)
    key = (settings.llm_service, base, model)
    cached = _cache.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    from roleplay.llm.dialect import upstream_dialect  # see `_base_url`

    try:
        limits = await upstream_dialect(settings).read_limits(base, model, served_models)
    except ApiError as error:
        logger.info("could not read the context length of %s: %s", model, error.message)
        limits = ModelLimits()
    if limits.context_length is None and settings.llm_context_length:
        limits = ModelLimits(settings.llm_context_length, limits.vision, "LLM_CONTEXT_LENGTH")
    expires = float("inf") if limits.context_length else time.monotonic() + RETRY_S
    _cache[key] = (limits, expires)
    return limits


def _base_url(settings: Settings) -> str:
    """The client's first base URL. Its module is imported here, not at the top: a session's
    view asks for the budget, and the chat function's cold start would otherwise pay the
    client's imports (httpx, the dialects: some 40 ms) before any turn (issue 30)."""
    from roleplay.llm.client import llm_client

    return llm_client(settings).base_url


def remember(model: str, context_length: int, settings: Settings | None = None) -> None:
    """What a refusal told us (vLLM's 400 names its limit): no need to ask again."""
    settings = settings or get_settings()
    key = (settings.llm_service, _base_url(settings), model)
    _cache[key] = (ModelLimits(context_length, source="the upstream's 400"), float("inf"))


def forget(model: str, settings: Settings | None = None) -> None:
    """Read the limits again at next use: the upstream refused what they allowed."""
    settings = settings or get_settings()
    _cache.pop((settings.llm_service, _base_url(settings), model), None)


async def context_budget(model: str, settings: Settings | None = None) -> int:
    """`MAX_CONTEXT_TOKENS`, clamped to what the upstream runs `model` with."""
    settings = settings or get_settings()
    wanted = settings.max_context_tokens
    limits = await model_limits(model, settings)
    if limits.context_length is None or limits.context_length >= wanted:
        return wanted
    mark = (settings.llm_service, model, wanted, limits.context_length)
    if mark not in _logged:
        _logged.add(mark)
        logger.warning("MAX_CONTEXT_TOKENS=%d is more than %s runs with (%d, from %s): "
                       "planning for %d", wanted, model, limits.context_length, limits.source,
                       limits.context_length)
    return limits.context_length

"""What the LLM upstream really allows each model: its context length, and whether it sees.

`MAX_CONTEXT_TOKENS` is what Server B would like; the upstream's context is what it
gets. Each server says it differently: vLLM's `max_model_len` on `/v1/models`,
llama.cpp's native server `n_ctx` on `/props`, Ollama's `<arch>.context_length` and
`capabilities` on `/api/show`. llama-cpp-python's server says nothing, so whoever starts
it (the local runner) sets `LLM_CONTEXT_LENGTH`.

Read at first use and kept per process; an answer that failed is asked again after
`RETRY_S`, and `forget` (called when the upstream refuses a prompt as too long) makes
the next turn ask again. Clamping is logged once per model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from roleplay.core.errors import ApiError
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.client import http_holder, llm_client, upstream_call
from roleplay.llm.served_models import served_models

logger = logging.getLogger("roleplay.llm.upstream_limits")

RETRY_S = 30.0
"""How long an upstream that could not say is taken at `MAX_CONTEXT_TOKENS`' word."""


@dataclass(frozen=True)
class ModelLimits:
    context_length: int | None = None
    """The most tokens (prompt and reply) the server runs this model with; None: unknown."""
    vision: bool | None = None
    source: str = "unknown"


_cache: dict[tuple[str, str, str], tuple[ModelLimits, float]] = {}
_logged: set[tuple[str, str, int, int]] = set()


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


async def _get_json(url: str, name: str, body: dict[str, Any] | None = None) -> Any:
    """The JSON answer, or None for an answer that is not a 200 JSON object."""
    http = await http_holder.get()
    async with upstream_call(name):
        response = (await http.post(url, json=body) if body is not None
                    else await http.get(url))
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


async def _openai_limits(base: str, model: str) -> ModelLimits:
    # The model list `served_models` keeps (and checks `model` names against) has vLLM's
    # max_model_len: one fetch serves both, and every model.
    listed = {card.id: card for card in await served_models()}
    card = listed.get(model)
    if card is not None and card.context_length:
        return ModelLimits(card.context_length, source="vLLM /v1/models max_model_len")
    props = await _get_json(f"{base}/props", "LLM upstream")
    if isinstance(props, dict):
        settings_ = props.get("default_generation_settings")
        length = _positive_int(settings_.get("n_ctx")) if isinstance(settings_, dict) else None
        length = length or _positive_int(props.get("n_ctx"))
        if length:
            return ModelLimits(length, source="llama.cpp /props n_ctx")
    return ModelLimits()


def ollama_show_limits(show: Any) -> ModelLimits:
    """`/api/show`'s `model_info["<general.architecture>.context_length"]` and
    `capabilities` (api/types.go ShowResponse)."""
    if not isinstance(show, dict):
        return ModelLimits()
    info = show.get("model_info")
    info = info if isinstance(info, dict) else {}
    arch = info.get("general.architecture")
    length = _positive_int(info.get(f"{arch}.context_length")) if arch else None
    if length is None:
        length = next((_positive_int(v) for k, v in info.items()
                       if k.endswith(".context_length") and _positive_int(v)), None)
    capabilities = show.get("capabilities")
    vision = "vision" in capabilities if isinstance(capabilities, list) else None
    return ModelLimits(length, vision, source="Ollama /api/show model_info")


async def _ollama_limits(base: str, model: str) -> ModelLimits:
    return ollama_show_limits(await _get_json(f"{base}/api/show", "LLM upstream", {"model": model}))


async def model_limits(model: str, settings: Settings | None = None) -> ModelLimits:
    """The upstream's own limits for `model`, cached; never raises (unknown is an answer)."""
    settings = settings or get_settings()
    if not settings.llm_base_url:  # nothing to ask (a stored greeting needs no LLM)
        return ModelLimits()
    base = llm_client(settings).base_url
    key = (settings.llm_service, base, model)
    cached = _cache.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    try:
        if settings.llm_service == "ollama":
            limits = await _ollama_limits(base, model)
        else:
            limits = await _openai_limits(base, model)
    except ApiError as error:
        logger.info("could not read the context length of %s: %s", model, error.message)
        limits = ModelLimits()
    if limits.context_length is None and settings.llm_context_length:
        limits = ModelLimits(settings.llm_context_length, limits.vision, "LLM_CONTEXT_LENGTH")
    expires = float("inf") if limits.context_length else time.monotonic() + RETRY_S
    _cache[key] = (limits, expires)
    return limits


def remember(model: str, context_length: int, settings: Settings | None = None) -> None:
    """What a refusal told us (vLLM's 400 names its limit): no need to ask again."""
    settings = settings or get_settings()
    key = (settings.llm_service, llm_client(settings).base_url, model)
    _cache[key] = (ModelLimits(context_length, source="the upstream's 400"), float("inf"))


def forget(model: str, settings: Settings | None = None) -> None:
    """Read the limits again at next use: the upstream refused what they allowed."""
    settings = settings or get_settings()
    _cache.pop((settings.llm_service, llm_client(settings).base_url, model), None)


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

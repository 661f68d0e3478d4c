"""Which models the LLM upstream serves: its own list (vLLM's and llama.cpp's
`/v1/models`, Ollama's `/api/tags`), cached in-process.

A turn may name a `model`; one the upstream does not serve is refused (400
`unknown_model`) before anything is stored, so client-chosen names cannot grow
Redis or any cache here. The list is kept `TTL_S`; a name missing from it refetches
it, at most once every `MISS_REFRESH_S`, so a new model is found within seconds and
six thousand invented names cost at most one fetch per few seconds. An upstream that
cannot be asked (down, no list endpoint) is no reason for a 400: the name passes, and
the turn meets the upstream's own 502. `DEFAULT_MODEL`, `SUMMARY_MODEL` and
`ALLOWED_MODELS` always pass, without asking.

The cache holds one list per upstream (service, base URL), each entry with the
upstream's figures (context length where it tells), for whoever needs them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from roleplay.core.errors import ApiError, BadRequest
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.client import llm_client
from roleplay.llm.dialect import upstream_dialect
from roleplay.llm.wire import UpstreamModel

TTL_S = 300.0
MISS_REFRESH_S = 5.0
CHECK_TIMEOUT_S = 5.0
"""A turn waits at most this long for the list; past it the name passes (as when down),
so a hanging upstream does not make the turn wait for it twice."""
_NAMES_IN_ERROR = 20


@dataclass
class _Entry:
    models: dict[str, UpstreamModel] = field(default_factory=dict)
    fetched_at: float | None = None
    """monotonic time of the last list that arrived."""
    tried_at: float = float("-inf")
    """monotonic time of the last attempt, arrived or not."""


_cache: dict[tuple[str, str], _Entry] = {}


def _upstream(settings: Settings) -> tuple[str, str]:
    return settings.llm_service, settings.llm_base_url or ""


def _entry(settings: Settings) -> _Entry:
    return _cache.setdefault(_upstream(settings), _Entry())


def configured_models(settings: Settings) -> frozenset[str]:
    """The names the operator chose: always accepted, never looked up."""
    return settings.allowed_model_names | {settings.default_model, *(
        [settings.summary_model] if settings.summary_model else [])}


async def served_models(*, refresh: bool = False) -> list[UpstreamModel]:
    """The upstream's list, fetched now when `refresh` or when the cached one is older than
    `TTL_S`; raises the upstream's errors (502/504, 503 with no upstream configured)."""
    settings = get_settings()
    entry = _entry(settings)
    now = time.monotonic()
    if refresh or entry.fetched_at is None or now - entry.fetched_at >= TTL_S:
        entry.tried_at = now
        models = await llm_client(settings).list_models()
        entry.models = {model.id: model for model in models}
        entry.fetched_at = time.monotonic()
    return list(entry.models.values())


def cached_model(name: str) -> UpstreamModel | None:
    """What the last list said about `name` (no fetch): for figures such as context length.
    The dialect says which entry a name means (Ollama's `gemma3` is `gemma3:latest`)."""
    settings = get_settings()
    return upstream_dialect(settings).find(name, _entry(settings).models)


def known_model(name: str) -> bool:
    """Configured, or on the upstream's last list (no fetch): what may be remembered per model."""
    settings = get_settings()
    return name in configured_models(settings) or cached_model(name) is not None


async def is_served(name: str) -> bool | None:
    """True or False from a list at most `MISS_REFRESH_S` old (or any list that has it);
    None when the upstream could not be asked."""
    settings = get_settings()
    entry = _entry(settings)
    now = time.monotonic()
    if entry.fetched_at is not None and now - entry.fetched_at < TTL_S and cached_model(name):
        return True
    if now - entry.tried_at < MISS_REFRESH_S:
        answered = entry.fetched_at is not None and entry.fetched_at >= entry.tried_at
        return (cached_model(name) is not None) if answered else None
    try:
        await asyncio.wait_for(served_models(refresh=True), CHECK_TIMEOUT_S)
    except (ApiError, TimeoutError):
        return None
    return cached_model(name) is not None


async def checked_model(requested: str | None) -> str:
    """The model a turn uses: DEFAULT_MODEL when none is named; 400 `unknown_model` when the
    upstream's list lacks the name."""
    settings = get_settings()
    if requested is None:
        return settings.default_model
    if requested in configured_models(settings) or await is_served(requested) is not False:
        return requested
    names = sorted(_entry(settings).models)
    raise BadRequest(
        f"unknown model {requested[:100]!r}: the LLM upstream does not serve it "
        "(GET /api/chat/models lists what it does; ALLOWED_MODELS adds names)",
        code="unknown_model", details={"model": requested[:200], "served": names[:_NAMES_IN_ERROR]})

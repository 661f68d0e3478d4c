"""Which models the LLM upstream serves: its own list (vLLM's and llama.cpp's
`/v1/models`, Ollama's `/api/tags`), cached in-process.

A turn may name a `model`; one the upstream does not serve is refused (400
`unknown_model`) before anything is stored, so client-chosen names cannot grow
Redis or any cache here. The list is kept `TTL_S`; a name missing from it refetches
it, at most once every `MISS_REFRESH_S`, so a new model is found within seconds and
six thousand invented names cost at most one fetch per few seconds. `DEFAULT_MODEL`,
`SUMMARY_MODEL` and `ALLOWED_MODELS` always pass, without asking.

While the list cannot be read (the upstream unreachable, hanging, failing with a 5xx,
its breaker open), a name is not known to be unknown, but not known to be served
either: a name on the last list that did arrive still passes, any other is 503
`model_list_unavailable` (with Retry-After), not 400, as nothing is wrong with the
request that asking again later cannot settle. Letting it through instead handed an
invented name to whatever answered next (llama.cpp serves any name with its one model,
and a breaker that has just closed lets every turn through). An upstream that answers
its list path with a 4xx has no list to read, now or later: there the upstream decides,
as before.

The cache holds one list per upstream (service, base URL), each entry with the
upstream's figures (context length where it tells), for whoever needs them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from roleplay.core.errors import ApiError, BadRequest, ServiceUnavailable
from roleplay.core.settings import Settings, get_settings
from roleplay.llm.answers import UpstreamModel

TTL_S = 300.0
MISS_REFRESH_S = 5.0
CHECK_TIMEOUT_S = 5.0
"""A turn waits at most this long for the list; past it the list counts as unreadable (as
when down), so a hanging upstream does not make every turn wait for it."""
_NAMES_IN_ERROR = 20


@dataclass
class _Entry:
    models: dict[str, UpstreamModel] = field(default_factory=dict)
    fetched_at: float | None = None
    """monotonic time of the last list that arrived."""
    tried_at: float = float("-inf")
    """monotonic time of the last attempt, arrived or not."""
    failure: str | None = None
    """Why the last attempt brought no list (its error code); None when it arrived."""
    retry_after_s: int | None = None
    """What the last failure's Retry-After said (an open breaker's time left)."""
    unlisted: bool = False
    """The last attempt was answered with a 4xx: this upstream has no list to read."""


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
        entry.failure, entry.retry_after_s, entry.unlisted = "upstream_timeout", None, False
        # here, not at the top: `known_model` is asked where the LLM is not called (a
        # session's view, the chat function's cold start), and the client's imports (httpx,
        # the dialects) weigh some 40 ms on a cold start (issue 30)
        from roleplay.llm.client import llm_client

        try:
            models = await llm_client(settings).list_models()
        except ApiError as error:
            retry = error.headers.get("Retry-After", "")
            status = error.details.get("upstream_status") if isinstance(error.details, dict) else None
            entry.failure = error.error_code
            entry.retry_after_s = int(retry) if retry.isdigit() else None
            entry.unlisted = isinstance(status, int) and 400 <= status < 500
            raise
        entry.models = {model.id: model for model in models}
        entry.fetched_at = time.monotonic()
        entry.failure = None
    return list(entry.models.values())


def cached_model(name: str) -> UpstreamModel | None:
    """What the last list said about `name` (no fetch): for figures such as context length.
    The dialect says which entry a name means (Ollama's `gemma3` is `gemma3:latest`)."""
    settings = get_settings()
    models = _entry(settings).models
    if not models:  # no list read yet: nothing to find, and no need of the dialects
        return None
    from roleplay.llm.dialect import upstream_dialect  # see `served_models`

    return upstream_dialect(settings).find(name, models)


def known_model(name: str) -> bool:
    """Configured, or on the upstream's last list (no fetch): what may be remembered per model."""
    settings = get_settings()
    return name in configured_models(settings) or cached_model(name) is not None


async def is_served(name: str) -> bool | None:
    """True or False from a list at most `MISS_REFRESH_S` old (or any list that has it,
    however old); None when the upstream could not be asked and no list it gave has it."""
    settings = get_settings()
    entry = _entry(settings)
    now = time.monotonic()
    listed = cached_model(name) is not None
    if listed and entry.fetched_at is not None and now - entry.fetched_at < TTL_S:
        return True
    if now - entry.tried_at < MISS_REFRESH_S:
        answered = entry.fetched_at is not None and entry.fetched_at >= entry.tried_at
        return True if listed else (False if answered else None)
    try:
        await asyncio.wait_for(served_models(refresh=True), CHECK_TIMEOUT_S)
    except (ApiError, TimeoutError):
        return True if listed else None
    return cached_model(name) is not None


async def checked_model(requested: str | None) -> str:
    """The model a turn uses: DEFAULT_MODEL when none is named; 400 `unknown_model` when the
    upstream's list lacks the name; 503 `model_list_unavailable` when the list cannot be
    read and the name is neither configured nor on a list read before."""
    settings = get_settings()
    if requested is None or requested in configured_models(settings):
        return requested or settings.default_model
    served = await is_served(requested)
    if served or (served is None and _entry(settings).unlisted):
        return requested
    if served is None:
        raise _list_unavailable(requested, _entry(settings))
    names = sorted(_entry(settings).models)
    raise BadRequest(
        f"unknown model {requested[:100]!r}: the LLM upstream does not serve it "
        "(GET /api/chat/models lists what it does; ALLOWED_MODELS adds names)",
        code="unknown_model", details={"model": requested[:200], "served": names[:_NAMES_IN_ERROR]})


def _list_unavailable(requested: str, entry: _Entry) -> ServiceUnavailable:
    retry = entry.retry_after_s or max(1, round(MISS_REFRESH_S))
    return ServiceUnavailable(
        f"the LLM upstream's model list cannot be read now ({entry.failure or 'no answer'}), "
        f"so {requested[:100]!r} cannot be checked; DEFAULT_MODEL, SUMMARY_MODEL and "
        "ALLOWED_MODELS names are accepted meanwhile", code="model_list_unavailable",
        headers={"Retry-After": str(retry)},
        details={"model": requested[:200], "upstream_error": entry.failure,
                 "retry_after_s": retry})

"""What the LLM upstream serves, joined with what we know about each model.

The upstream says which models exist and, where it can, the context each really runs
with (vLLM's `max_model_len`; llama.cpp's `n_ctx`, or `LLM_CONTEXT_LENGTH` that the
local runner sets for its embedded server; for Ollama the `num_ctx` Server B sends,
`MAX_CONTEXT_TOKENS` clamped to `/api/show`'s context length) and whether it takes
images (Ollama's `/api/show` capabilities). Metadata it cannot tell (a display name)
comes from the built-in table and `MODEL_METADATA`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from roleplay.core.settings import Settings, get_settings
from roleplay.llm.answers import ModelLimits, UpstreamModel
from roleplay.llm.dialect import UpstreamDialect, upstream_dialect
from roleplay.llm.served_models import served_models
from roleplay.llm.upstream_limits import model_limits

KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "gemma-3-27b-it": {"name": "Gemma 3 27B IT", "context_length": 131072, "multimodal": True},
    "google/gemma-3-27b-it": {"name": "Gemma 3 27B IT", "context_length": 131072,
                              "multimodal": True},
    "smollm2-135m-instruct": {"name": "SmolLM2 135M Instruct (embedded)", "context_length": 8192,
                              "multimodal": False},
}


class ModelInfo(BaseModel):
    id: str
    name: str
    context_length: int | None = None
    multimodal: bool = False
    owned_by: str | None = None
    details: dict[str, Any] = {}


class ModelList(BaseModel):
    service: str
    default_model: str
    models: list[ModelInfo]


async def list_models() -> ModelList:
    settings = get_settings()
    dialect = upstream_dialect(settings)
    served = await served_models(refresh=True)
    limits = await asyncio.gather(*(_limits(model, dialect, settings) for model in served))
    models = []
    for model, limit in zip(served, limits, strict=True):
        known = {**KNOWN_MODELS.get(model.id, {}), **settings.model_metadata.get(model.id, {})}
        details = model.details
        runs_with = limit.context_length
        if dialect.context_per_request and limit.context_length:
            details = {**details, "model_context_length": limit.context_length}
            runs_with = min(settings.max_context_tokens, limit.context_length)
        models.append(ModelInfo(
            id=model.id,
            name=str(known.get("name", model.id)),
            context_length=model.context_length or runs_with or known.get("context_length"),
            multimodal=bool(known.get("multimodal", False) if limit.vision is None
                            else limit.vision),
            owned_by=model.owned_by,
            details=details,
        ))
    return ModelList(service=dialect.service, default_model=settings.default_model, models=models)


async def _limits(model: UpstreamModel, dialect: UpstreamDialect, settings: Settings) -> ModelLimits:
    """Asked only where the model list did not say (cached per process after that)."""
    if model.context_length and not dialect.context_per_request:
        return ModelLimits(model.context_length)
    return await model_limits(model.id, settings)

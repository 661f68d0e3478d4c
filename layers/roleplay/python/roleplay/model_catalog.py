"""What the LLM upstream serves, joined with what we know about each model.

The upstream says which models exist; metadata it cannot tell (a display name,
whether a model takes images) comes from the built-in table and `MODEL_METADATA`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from roleplay.llm_client import llm_client
from roleplay.served_models import served_models
from roleplay.settings import get_settings

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
    client = llm_client(settings)
    served = await served_models(refresh=True)
    models = []
    for model in served:
        known = {**KNOWN_MODELS.get(model.id, {}), **settings.model_metadata.get(model.id, {})}
        models.append(ModelInfo(
            id=model.id,
            name=str(known.get("name", model.id)),
            context_length=model.context_length or known.get("context_length"),
            multimodal=bool(known.get("multimodal", False)),
            owned_by=model.owned_by,
            details=model.details,
        ))
    return ModelList(service=client.service, default_model=settings.default_model, models=models)

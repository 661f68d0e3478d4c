"""The shapes of the LLM upstream's answers (a completion, a streamed chunk, a listed
model, a model's limits), apart from `llm.wire`'s transport: what reads a cached list or
limits needs them without httpx, which a function that never calls the LLM would pay at
its cold start (issue 30)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    content: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None  # as the upstream named the model that answered


@dataclass(frozen=True)
class StreamChunk:
    """A text delta, or (with `done`) the closing chunk carrying usage and the model."""

    delta: str = ""
    done: bool = False
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class UpstreamModel:
    id: str
    owned_by: str | None = None
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelLimits:
    context_length: int | None = None
    """The most tokens (prompt and reply) the server runs this model with; None: unknown."""
    vision: bool | None = None
    source: str = "unknown"

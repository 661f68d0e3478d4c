"""Embeddings of short texts from Server A, for recalling past scenes by meaning (issue 28).

`embed(texts, kind=...)` asks the embedding server named by the settings (`EMBEDDING_MODEL`,
`EMBEDDING_BASE_URL` else `LLM_BASE_URL`, `EMBEDDING_SERVICE` else `LLM_SERVICE`) and answers
one unit-length vector per text, in order, so that a dot product is the cosine. It
speaks the two dialects of the LLM client:

- vLLM (or any OpenAI-compatible server): `POST /v1/embeddings` `{"model", "input": [...]}`
  → `{"data": [{"index", "embedding": [...]}, ...]}`, read in `index` order (vLLM's
  entrypoints/pooling/embed protocol.py and serving.py; errors are `{"error": {"message"}}`).
- Ollama: `POST /api/embed` `{"model", "input": [...]}` → `{"embeddings": [[...], ...]}`
  in input order (api/types.go EmbedRequest/EmbedResponse, server/routes.go EmbedHandler;
  errors are `{"error": "..."}`).

Memory is an improvement, never a dependency: a turn waits at most `EMBEDDING_TIMEOUT_S`
(or the caller's `timeout_s`) and then ranks lexically. So every failure (not configured,
unreachable, too slow, an error answer, an answer of the wrong shape) is one exception,
`EmbeddingUnavailable`, with a message an operator can act on, and nothing else escapes.

Kept light for a Lambda's cold start: httpx and the standard library only (no numpy);
a few vectors of a few hundred floats are normalised in pure Python.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from roleplay.core import metrics
from roleplay.core.http_pool import pooled_http
from roleplay.core.settings import Settings, get_settings
from roleplay.core.url_redaction import redact_url
from roleplay.llm.wire import upstream_message

__all__ = ["EmbeddingUnavailable", "Kind", "embed", "embedding_http", "embeddings_configured"]

Kind = Literal["query", "passage"]

_PATHS = {"vllm": "/v1/embeddings", "ollama": "/api/embed"}
_NAMES = {"vllm": "embedding server (OpenAI-compatible)", "ollama": "embedding server (Ollama)"}

embedding_http = pooled_http(lambda s: (s.llm_connect_timeout_s, s.embedding_timeout_s),
                             max_connections=50, keepalive=10)
"""Its own pool, not the LLM's: a pool busy with long chat streams must not make a turn's
two-second embedding wait for a connection. Each call also sets its own deadline."""


class EmbeddingUnavailable(Exception):
    """No embeddings this time, for whatever reason; the caller ranks lexically instead."""


def embeddings_configured(settings: Settings | None = None) -> bool:
    """Whether memory may try embeddings at all: a model is named and there is a server to
    ask. Checked before a turn spends its time on a call that cannot succeed."""
    settings = settings or get_settings()
    return settings.embedding_model is not None and _base_url(settings) is not None


async def embed(texts: Sequence[str], *, kind: Kind, timeout_s: float | None = None,
                settings: Settings | None = None) -> list[list[float]]:
    """One unit vector per text, in order. `kind` says whether the texts are a query (the
    message being answered) or passages (stored episodes); E5 models are trained with a
    prefix for each (see `_with_prefix`). Waits at most `timeout_s` (default
    `EMBEDDING_TIMEOUT_S`) in all; raises `EmbeddingUnavailable` on any failure."""
    try:
        settings = settings or get_settings()
    except Exception as error:  # an invalid environment: memory stays lexical, the turn goes on
        raise EmbeddingUnavailable(f"embeddings are off: {error}") from error
    model, base = settings.embedding_model, _base_url(settings)
    if model is None:
        raise EmbeddingUnavailable("embeddings are off: EMBEDDING_MODEL is not set")
    if base is None:
        raise EmbeddingUnavailable("embeddings are off: neither EMBEDDING_BASE_URL nor "
                                   "LLM_BASE_URL is set")
    if isinstance(texts, str):  # a str is a Sequence[str] too: one text, not one per letter
        texts = [texts]
    if not texts:
        return []
    service = settings.embedding_service or settings.llm_service
    name = _NAMES[service]
    deadline = settings.embedding_timeout_s if timeout_s is None else timeout_s
    url = base + _PATHS[service]
    payload = {"model": model, "input": _with_prefix(model, kind, texts)}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline):
            http = await embedding_http.get()
            response = await http.post(url, json=payload, timeout=httpx.Timeout(deadline))
    except (TimeoutError, httpx.TimeoutException):
        raise EmbeddingUnavailable(
            f"{name} at {redact_url(base)} did not answer within {deadline:g} s") from None
    except httpx.TransportError as error:
        raise EmbeddingUnavailable(f"{name} at {redact_url(base)} is unreachable: "
                                   f"{error or type(error).__name__}") from None
    except Exception as error:  # e.g. httpx.InvalidURL for a malformed base URL
        raise EmbeddingUnavailable(f"{name} at {redact_url(base)} could not be asked: "
                                   f"{type(error).__name__}: {error}") from error
    finally:
        metrics.observe("upstream_seconds", time.perf_counter() - started, upstream=name)
    if not response.is_success:
        message = upstream_message(response.content, response.reason_phrase or "no message")
        raise EmbeddingUnavailable(f"{name} answered HTTP {response.status_code}: {message}")
    try:
        body = response.json()
    except ValueError:
        raise EmbeddingUnavailable(f"{name} answered with something that is not JSON") from None
    vectors = _openai_vectors(body, name) if service == "vllm" else _ollama_vectors(body, name)
    return _unit_vectors(vectors, len(texts), name)


def _base_url(settings: Settings) -> str | None:
    """`EMBEDDING_BASE_URL`, else the LLM's; written either with or without `/v1`, as the LLM
    client accepts it."""
    base = settings.embedding_base_url or settings.llm_base_url
    return base.rstrip("/").removesuffix("/v1") if base else None


def _with_prefix(model: str, kind: Kind, texts: Sequence[str]) -> list[str]:
    """E5 models (intfloat/e5-*, multilingual-e5-*) were trained with every input starting
    "query: " or "passage: " and rank worse without; neither vLLM's /v1/embeddings nor
    Ollama's /api/embed adds it. Other models were not trained so and get the text as is."""
    if "e5" not in model.lower():
        return list(texts)
    return [f"{kind}: {text}" for text in texts]


def _openai_vectors(body: Any, name: str) -> list[Any]:
    """vLLM's `data`, put in `index` order (the OpenAI API does not promise input order)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise EmbeddingUnavailable(f"{name} answered no list of `data` objects")
    indexes = [item.get("index") for item in data]
    if any(type(index) is not int for index in indexes) or sorted(indexes) != list(range(len(data))):
        raise EmbeddingUnavailable(f"{name} answered indexes {indexes!r}, not 0 to {len(data) - 1}")
    return [item.get("embedding") for item in sorted(data, key=lambda item: int(item["index"]))]


def _ollama_vectors(body: Any, name: str) -> list[Any]:
    embeddings = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(embeddings, list):
        raise EmbeddingUnavailable(f"{name} answered no `embeddings` list")
    return embeddings


def _unit_vectors(vectors: list[Any], expected: int, name: str) -> list[list[float]]:
    """Checks the answer (one vector per text, numbers, one dimension) and scales each vector
    to length 1, so callers can rank by dot product whichever server normalised."""
    if len(vectors) != expected:
        raise EmbeddingUnavailable(f"{name} answered {len(vectors)} vectors for {expected} texts")
    units: list[list[float]] = []
    for position, vector in enumerate(vectors):
        if not isinstance(vector, list) or not vector or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in vector):
            raise EmbeddingUnavailable(f"{name} answered vector {position} that is not a list "
                                       "of numbers")
        if units and len(vector) != len(units[0]):
            raise EmbeddingUnavailable(f"{name} answered vectors of {len(units[0])} and "
                                       f"{len(vector)} dimensions")
        length = math.hypot(*vector)
        if not (math.isfinite(length) and length > 0):
            raise EmbeddingUnavailable(f"{name} answered vector {position} of length {length}, "
                                       "which cannot be normalised")
        units.append([x / length for x in vector])
    return units

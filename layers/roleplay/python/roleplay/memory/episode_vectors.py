"""Embeddings of episodes, made in the background (the summary job) and never on a turn.

Every job embeds whatever episodes still lack a vector, so one the embedding server
missed (down, slow) is made by a later job; until then the lexical ranker covers it.
"""

from __future__ import annotations

import logging

from roleplay.core import metrics
from roleplay.core.settings import get_settings
from roleplay.llm.embeddings import EmbeddingUnavailable, embed, embeddings_configured
from roleplay.sessions.episode_store import EpisodeStore

logger = logging.getLogger("roleplay.memory.episode_vectors")

BATCH = 32
"""Episodes per embedding request."""


async def embed_missing(session_id: str, store: EpisodeStore | None = None) -> int:
    """Embeds the session's episodes that have no vector; answers how many were stored."""
    settings = get_settings()
    if settings.memory_tokens == 0 or not embeddings_configured(settings):
        return 0
    store = store or EpisodeStore()
    missing = [s for s in await store.read_all(session_id) if s.vector is None]
    kept = 0
    for start in range(0, len(missing), BATCH):
        batch = missing[start:start + BATCH]
        try:
            vectors = await embed([s.episode.text for s in batch], kind="passage",
                                  timeout_s=max(settings.embedding_timeout_s, 30.0))
        except EmbeddingUnavailable as error:
            metrics.inc("memory_embedding_failures_total")
            logger.warning("episodes of session %s left without vectors: %s", session_id, error)
            break
        kept += await store.save_vectors(session_id, list(zip(batch, vectors, strict=True)))
    return kept

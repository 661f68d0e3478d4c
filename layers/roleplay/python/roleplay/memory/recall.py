"""Brings back the session's episodes that matter to the user's new message, within the
prompt's memory budget.

Each process keeps a ranked copy of a session's episodes (the lexical index, the
vectors) while the session's memory revision, read with every turn's window, stays the
same: a turn then costs no Redis round trip for memory and no index build. Only
episodes the summary has folded are candidates (the window's messages are in the prompt
already). With an embedding model configured the message is embedded (the one call on
the request path, bounded by `EMBEDDING_TIMEOUT_S`), and the lexical ranker takes over
for episodes without a vector or when the embedding fails; memory never fails a turn.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from roleplay.characters.persona import PersonaLanguage, memory_block
from roleplay.core import metrics
from roleplay.core.redis_client import get_redis
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import message_tokens
from roleplay.llm.embeddings import EmbeddingUnavailable, embed, embeddings_configured
from roleplay.memory.rankers import LexicalRanker, SemanticRanker
from roleplay.sessions.episode_store import EpisodeStore, StoredEpisode
from roleplay.sessions.store import Window

logger = logging.getLogger("roleplay.memory.recall")

CACHED_EPISODES = 20_000
"""Episodes a process keeps ranked copies of, over all sessions (a few tens of MB at
most); past it the least recently used sessions' copies go first."""

SEPARATOR_TOKENS = 2


@dataclass(frozen=True)
class Recall:
    block: str
    """The memory block, as it follows the summary in the system prompt."""
    ids: list[str]
    tokens: int
    ranked_by: str
    """`lexical` or `embedding`."""


@dataclass
class _SessionMemory:
    """A process's ranked copy of one session's episodes, good for one memory revision."""

    rev: int
    episodes: list[StoredEpisode]
    _lexical: LexicalRanker | None = field(default=None, repr=False)
    _semantic: SemanticRanker | None = field(default=None, repr=False)

    @property
    def lexical(self) -> LexicalRanker:
        if self._lexical is None:
            self._lexical = LexicalRanker([s.episode.terms for s in self.episodes])
        return self._lexical

    @property
    def semantic(self) -> SemanticRanker:
        if self._semantic is None:
            self._semantic = SemanticRanker([s.vector for s in self.episodes])
        return self._semantic


_memories: OrderedDict[str, _SessionMemory] = OrderedDict()
_store = EpisodeStore()


def forget_cached() -> None:
    """Drops every cached copy (tests; a process's copies are otherwise kept by revision)."""
    _memories.clear()


async def _memory_of(session_id: str, rev: int) -> _SessionMemory:
    redis = await get_redis()
    key = f"{id(redis)}:{session_id}"
    memory = _memories.get(key)
    if memory is not None and memory.rev == rev:
        _memories.move_to_end(key)
        return memory
    memory = _SessionMemory(rev, await _store.read_all(session_id))
    _memories[key] = memory
    _memories.move_to_end(key)
    held = sum(len(m.episodes) for m in _memories.values())
    while held > CACHED_EPISODES and len(_memories) > 1:
        held -= len(_memories.popitem(last=False)[1].episodes)
    return memory


def _query(window: Window) -> str | None:
    for message in reversed(window.messages):
        if message.role == "user" and message.content.strip():
            return message.content
    return None


def _within(order: Sequence[int], episodes: Sequence[StoredEpisode], budget: int) -> list[int]:
    """Taken in rank order while they fit; one too big is passed over, not a stop."""
    taken: list[int] = []
    used = 0
    for i in order:
        cost = episodes[i].episode.tokens + SEPARATOR_TOKENS
        if used + cost <= budget:
            taken.append(i)
            used += cost
    return taken


async def _ranked(memory: _SessionMemory, query: str, candidates: list[int]) -> tuple[list[int], str]:
    settings = get_settings()
    lexical = memory.lexical.order(query, candidates)
    if not embeddings_configured(settings) or not memory.semantic.covers:
        return lexical, "lexical"
    try:
        vector = (await embed([query], kind="query", timeout_s=settings.embedding_timeout_s))[0]
    except EmbeddingUnavailable as error:
        metrics.inc("memory_embedding_failures_total")
        logger.warning("ranking memory lexically: %s", error)
        return lexical, "lexical"
    semantic = memory.semantic.order(vector, candidates)
    covered = memory.semantic.covers
    return semantic + [i for i in lexical if i not in covered], "embedding"


async def recall(session_id: str, window: Window, *, budget_tokens: int,
                 language: PersonaLanguage) -> Recall | None:
    """The memory block for this turn's prompt, or None when nothing is worth recalling."""
    if budget_tokens <= 0 or window.memory_rev == 0 or window.watermark < 0:
        return None
    query = _query(window)
    if query is None:
        return None
    memory = await _memory_of(session_id, window.memory_rev)
    horizon = min(window.watermark, window.first_index - 1)
    candidates = [i for i, s in enumerate(memory.episodes) if s.episode.last <= horizon]
    if not candidates:
        return None
    label = message_tokens(memory_block([], language))
    order, ranked_by = await _ranked(memory, query, candidates)
    chosen = sorted(_within(order, memory.episodes, budget_tokens - label))
    if not chosen:
        return None
    metrics.inc("memory_recalls_total", ranked_by=ranked_by)
    block = memory_block([memory.episodes[i].episode.text for i in chosen], language)
    return Recall(block=block, ids=[memory.episodes[i].episode.id for i in chosen],
                  tokens=message_tokens(block), ranked_by=ranked_by)

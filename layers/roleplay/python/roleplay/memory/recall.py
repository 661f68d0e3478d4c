"""Brings back the session's episodes that matter to the user's new message, within the
prompt's memory budget.

Each process keeps a ranked copy of a session's episodes (the lexical index, the
vectors) while the session's memory revision, read with every turn's window, stays the
same: a turn then costs no Redis round trip for memory and no index build. Only
episodes the summary has folded are candidates (the window's messages are in the prompt
already). With an embedding model configured the message is embedded (the one call on
the request path, bounded by `EMBEDDING_TIMEOUT_S`), and the lexical ranker takes over
for episodes without a vector or when the embedding fails; memory never fails a turn.

A steady turn's recall does not grow with the session's episodes: the candidates are found
by bisection, the rankers sort in numpy, the budget's walk stops once it is full, and the
block's tokens are the episodes' stored counts (`memory.block`), never encoded again.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from roleplay.characters.persona import PersonaLanguage, memory_block
from roleplay.core import metrics
from roleplay.core.redis_client import get_redis
from roleplay.core.settings import get_settings
from roleplay.core.token_counter import message_tokens
from roleplay.llm.embeddings import EmbeddingUnavailable, embed, embeddings_configured
from roleplay.memory.block import MemoryBlock, block_of
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
    block: MemoryBlock
    """The memory block, as it follows the summary in the system prompt, with its tokens."""
    ids: list[str]
    ranked_by: str
    """`lexical` or `embedding`."""


@dataclass
class _SessionMemory:
    """A process's ranked copy of one session's episodes, good for one memory revision.

    The episodes are ordered by their last message, so those a summary has folded are the
    first `within(horizon)`; their prompt costs are kept beside them for the budget."""

    rev: int
    episodes: list[StoredEpisode]
    lasts: list[int]
    costs: list[int]
    smallest: int
    """The cheapest episode's cost: once less room than this is left, none fits."""
    _lexical: LexicalRanker | None = field(default=None, repr=False)
    _semantic: SemanticRanker | None = field(default=None, repr=False)

    @classmethod
    def of(cls, rev: int, stored: Sequence[StoredEpisode]) -> _SessionMemory:
        episodes = sorted(stored, key=lambda s: s.episode.last)
        costs = [s.episode.tokens + SEPARATOR_TOKENS for s in episodes]
        return cls(rev, episodes, [s.episode.last for s in episodes], costs, min(costs, default=0))

    def within(self, horizon: int) -> int:
        """How many episodes end at or before `horizon`."""
        return bisect_right(self.lasts, horizon)

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
    memory = _SessionMemory.of(rev, await _store.read_all(session_id))
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


def _within(order: Iterable[int], costs: Sequence[int], budget: int, smallest: int) -> list[int]:
    """Taken in rank order while they fit; one too big is passed over, not a stop, and the
    walk ends as soon as not even the smallest episode would fit."""
    taken: list[int] = []
    room = budget
    for i in order:
        if room < smallest:
            break
        if costs[i] <= room:
            taken.append(i)
            room -= costs[i]
    return taken


async def _ranked(memory: _SessionMemory, query: str, within: int) -> tuple[list[int], str]:
    """By embedding when the session has vectors and the message gets one; the lexical order
    (made only then) fills in the candidates without a vector, and takes over when embedding
    fails."""
    settings = get_settings()
    if not embeddings_configured(settings) or not memory.semantic.covers:
        return memory.lexical.order(query, within), "lexical"
    try:
        vector = (await embed([query], kind="query", timeout_s=settings.embedding_timeout_s))[0]
    except EmbeddingUnavailable as error:
        metrics.inc("memory_embedding_failures_total")
        logger.warning("ranking memory lexically: %s", error)
        return memory.lexical.order(query, within), "lexical"
    semantic = memory.semantic.order(vector, within)
    if memory.semantic.covers_first(within):
        return semantic, "embedding"
    covered = memory.semantic.covers
    return semantic + [i for i in memory.lexical.order(query, within) if i not in covered], "embedding"


async def recall(session_id: str, window: Window, *, budget_tokens: int,
                 language: PersonaLanguage) -> Recall | None:
    """The memory block for this turn's prompt, or None when nothing is worth recalling."""
    if budget_tokens <= 0 or window.memory_rev == 0 or window.watermark < 0:
        return None
    query = _query(window)
    if query is None:
        return None
    memory = await _memory_of(session_id, window.memory_rev)
    within = memory.within(min(window.watermark, window.first_index - 1))
    if not within:
        return None
    label = message_tokens(memory_block([], language))
    order, ranked_by = await _ranked(memory, query, within)
    chosen = sorted(_within(order, memory.costs, budget_tokens - label, memory.smallest))
    if not chosen:
        return None
    metrics.inc("memory_recalls_total", ranked_by=ranked_by)
    episodes = [memory.episodes[i].episode for i in chosen]
    return Recall(block=block_of(episodes, language), ids=[e.id for e in episodes], ranked_by=ranked_by)

"""Orders a session's episodes by relevance to the user's new message.

Lexical: BM25 over the stored terms (`lexical_terms`), with `bm25s`; an episode that
shares no term with the message is never recalled. Semantic: the dot product of unit
vectors made by the embedding model (`llm.embeddings`). numpy and bm25s are imported
only when a session first has episodes to rank: a cold start never pays for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from roleplay.memory.lexical_terms import terms

if TYPE_CHECKING:
    import numpy as np


class LexicalRanker:
    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        import bm25s

        self._empty = not any(documents)
        self._index: Any = bm25s.BM25()
        if not self._empty:
            self._index.index([list(d) or [""] for d in documents], show_progress=False)
            self._vocab: set[str] = set(self._index.vocab_dict)

    def order(self, query: str, candidates: Sequence[int]) -> list[int]:
        """The candidates that share a term with `query`, best first."""
        if self._empty:
            return []
        known = [t for t in terms(query) if t in self._vocab]
        if not known:
            return []
        scores = self._index.get_scores(known)
        ranked = sorted(candidates, key=lambda i: -float(scores[i]))
        return [i for i in ranked if scores[i] > 0]


class SemanticRanker:
    def __init__(self, vectors: Sequence[Sequence[float] | None]) -> None:
        import numpy

        self._rows = [i for i, v in enumerate(vectors) if v is not None]
        self._matrix: np.ndarray | None = (
            numpy.asarray([vectors[i] for i in self._rows], dtype=numpy.float32)
            if self._rows else None)

    @property
    def covers(self) -> frozenset[int]:
        return frozenset(self._rows)

    def order(self, query_vector: Sequence[float], candidates: Sequence[int]) -> list[int]:
        """The candidates with vectors, most similar first."""
        if self._matrix is None:
            return []
        import numpy

        scores = self._matrix @ numpy.asarray(query_vector, dtype=numpy.float32)
        by_row = {episode: float(scores[row]) for row, episode in enumerate(self._rows)}
        return sorted((i for i in candidates if i in by_row), key=lambda i: -by_row[i])

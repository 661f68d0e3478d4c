"""Orders a session's episodes by relevance to the user's new message.

Lexical: BM25 over the stored terms (`lexical_terms`), with `bm25s`; an episode that
shares no term with the message is never recalled. Semantic: the dot product of unit
vectors made by the embedding model (`llm.embeddings`). numpy and bm25s are imported
only when a session first has episodes to rank: a cold start never pays for them.

The candidates are always the first `within` episodes (the recall keeps them ordered by
their last message, so those the summary has folded come first), and both orders are
numpy sorts of the scores: a turn's ranking costs no Python step per episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from roleplay.memory.lexical_terms import terms

if TYPE_CHECKING:
    import numpy as np


def _best_first(scores: np.ndarray, rows: np.ndarray) -> list[int]:
    """`rows` by their `scores`, best first; equal scores in `rows`' order."""
    import numpy

    ordered: list[int] = rows[numpy.argsort(-scores, kind="stable")].tolist()
    return ordered


class LexicalRanker:
    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        import bm25s

        self._empty = not any(documents)
        self._index: Any = bm25s.BM25()
        if not self._empty:
            self._index.index([list(d) or [""] for d in documents], show_progress=False)
            self._vocab: set[str] = set(self._index.vocab_dict)

    def order(self, query: str, within: int) -> list[int]:
        """The first `within` episodes that share a term with `query`, best first."""
        if self._empty or within <= 0:
            return []
        known = [t for t in terms(query) if t in self._vocab]
        if not known:
            return []
        import numpy

        scores = self._index.get_scores(known)[:within]
        hits = numpy.flatnonzero(scores > 0)
        return _best_first(scores[hits], hits)


class SemanticRanker:
    def __init__(self, vectors: Sequence[Sequence[float] | None]) -> None:
        import numpy

        rows = [i for i, v in enumerate(vectors) if v is not None]
        self.covers = frozenset(rows)
        self._rows = numpy.asarray(rows, dtype=numpy.int64)
        self._matrix: np.ndarray | None = (
            numpy.asarray([vectors[i] for i in rows], dtype=numpy.float32) if rows else None)

    def covers_first(self, within: int) -> bool:
        """Whether each of the first `within` episodes has a vector."""
        return within <= 0 or (len(self._rows) >= within and int(self._rows[within - 1]) == within - 1)

    def order(self, query_vector: Sequence[float], within: int) -> list[int]:
        """The first `within` episodes that have vectors, most similar first."""
        if self._matrix is None or within <= 0:
            return []
        import numpy

        taken = int(numpy.searchsorted(self._rows, within))
        # the whole product, then the slice: BLAS may round a slice's product otherwise
        scores = self._matrix @ numpy.asarray(query_vector, dtype=numpy.float32)
        return _best_first(scores[:taken], self._rows[:taken])

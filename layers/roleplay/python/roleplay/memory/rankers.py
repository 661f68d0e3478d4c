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
    ordered: list[int] = rows[(-scores).argsort(kind="stable")].tolist()
    return ordered


class LexicalRanker:
    """bm25s builds the index (each term's documents and their BM25 weights, in compressed
    sparse columns); a query adds up its terms' columns here as `BM25.get_scores` does,
    but in one `numpy.add.at` over all of them rather than one per term (several
    microseconds each, and a Korean message has a dozen or more terms): the same float32
    sums in the same order, a fifth of the time."""

    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        import bm25s

        self._empty = not any(documents)
        if self._empty:
            return
        index: Any = bm25s.BM25()
        index.index([list(d) or [""] for d in documents], show_progress=False)
        self._ids: dict[str, int] = index.vocab_dict
        columns = index.scores
        self._data: np.ndarray = columns["data"]
        self._rows: np.ndarray = columns["indices"]
        self._starts: list[int] = columns["indptr"].tolist()
        self._documents: int = columns["num_docs"]

    def scores(self, query: str) -> np.ndarray | None:
        """Every episode's BM25 score for `query`; None when it shares no term with any."""
        if self._empty:
            return None
        ids = [self._ids[t] for t in terms(query) if t in self._ids]
        if not ids:
            return None
        import numpy

        columns = [slice(self._starts[term], self._starts[term + 1]) for term in ids]
        scores = numpy.zeros(self._documents, dtype=self._data.dtype)
        numpy.add.at(scores, numpy.concatenate([self._rows[c] for c in columns]),
                     numpy.concatenate([self._data[c] for c in columns]))
        return scores

    def order(self, query: str, within: int) -> list[int]:
        """The first `within` episodes that share a term with `query`, best first."""
        scores = self.scores(query) if within > 0 else None
        if scores is None:
            return []
        scores = scores[:within]
        hits = (scores > 0).nonzero()[0]
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

        taken = int(self._rows.searchsorted(within))
        # the whole product, then the slice: BLAS may round a slice's product otherwise
        scores = self._matrix @ numpy.asarray(query_vector, dtype=numpy.float32)
        return _best_first(scores[:taken], self._rows[:taken])

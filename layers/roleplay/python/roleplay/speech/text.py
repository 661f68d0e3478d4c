"""What of a character's reply is spoken, and where it can be cut into sentences.

Role-play replies carry stage directions (`*waves*`, `(smiles)`, `（웃으며）`) that a
voice must not read aloud. And a streamed reply is cut into sentences as tokens
arrive, so speech can start with the first sentence instead of the whole reply: the
first piece may end early at a comma, so the first audio comes sooner still. When speech
streams (GPT-SoVITS modes 1-3, chosen for latency over prosody), the first piece may end
at any word boundary once it is long enough, as RealtimeTTS's `fast_sentence_fragment`
and `force_first_fragment_after_words` do: the voice starts while the LLM is still
writing the first sentence.
"""

from __future__ import annotations

import re

_DIRECTIONS = re.compile(r"\*[^*\n]*\*|\([^()\n]*\)|（[^（）\n]*）|\[[^\[\]\n]*\]")
_SPACES = re.compile(r"[ \t]+")
_SENTENCE_END = frozenset(".!?…。！？~\n")
_CLAUSE_END = frozenset(",，、;；")
_OPENERS = {"*": "*", "(": ")", "（": "）", "[": "]"}

FIRST_PIECE_MIN_CHARS = 8
"""A first piece this long (spoken characters) may end at a comma, or, when speech streams,
at a word boundary: a quick first sound, still a phrase."""
MIN_SENTENCE_CHARS = 2
"""Shorter sentences ('네.', '...') ride along with the next one rather than cost a synthesis."""


def spoken_text(reply: str, *, strip_directions: bool = True) -> str:
    """The reply as a voice should say it: stage directions out, whitespace tidied."""
    text = _DIRECTIONS.sub(" ", reply) if strip_directions else reply
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


class SentenceSplitter:
    """Feed it text deltas; it hands back each sentence once the sentence is complete.

    A sentence ends at Korean or English end punctuation (or a line break) once the
    punctuation run is over, never inside an open stage direction. Pieces come out
    already cleaned by `spoken_text`; pieces with nothing to say are skipped.
    """

    def __init__(self, *, strip_directions: bool = True, first_piece_early: bool = True,
                 first_piece_at_word: bool = False) -> None:
        self.strip_directions = strip_directions
        self.first_piece_early = first_piece_early
        self.first_piece_at_word = first_piece_at_word
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while (cut := self._next_cut()) is not None:
            raw, self._buffer = self._buffer[:cut], self._buffer[cut:]
            spoken = spoken_text(raw, strip_directions=self.strip_directions)
            if _speakable(spoken):
                pieces.append(spoken)
                self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        """The rest, when the reply has ended."""
        raw, self._buffer = self._buffer, ""
        spoken = spoken_text(raw, strip_directions=self.strip_directions)
        if _speakable(spoken):
            self._emitted += 1
            return [spoken]
        return []

    def _next_cut(self) -> int | None:
        cut = self._sentence_cut()
        if cut is None and self.first_piece_at_word and self._emitted == 0:
            return self._word_cut()
        return cut

    def _word_cut(self) -> int | None:
        """The first word boundary after `FIRST_PIECE_MIN_CHARS` spoken characters, unless the
        buffer already ends a sentence (then the whole sentence is one delta away)."""
        text = self._buffer
        if text.rstrip()[-1:] in _SENTENCE_END:
            return None
        closing: str | None = None
        for index, char in enumerate(text):
            if closing is not None:
                if char == closing:
                    closing = None
                continue
            if char in _OPENERS and self.strip_directions:
                closing = _OPENERS[char]
            elif char == " " and len(spoken_text(text[:index], strip_directions=self.strip_directions)
                                     ) >= FIRST_PIECE_MIN_CHARS:
                return index
        return None

    def _sentence_cut(self) -> int | None:
        """Index just after the first complete sentence in the buffer, if there is one."""
        text = self._buffer
        closing: str | None = None
        early = self.first_piece_early and self._emitted == 0
        for index, char in enumerate(text):
            if closing is not None:
                if char == closing or char == "\n":
                    closing = None
                continue
            if char in _OPENERS and self.strip_directions:
                closing = _OPENERS[char]
                continue
            ends = char in _SENTENCE_END or (early and char in _CLAUSE_END
                                             and index + 1 >= FIRST_PIECE_MIN_CHARS)
            if not ends:
                continue
            after = index + 1
            while after < len(text) and text[after] in _SENTENCE_END:
                after += 1
            if after == len(text) and char != "\n":
                return None  # the punctuation run may go on ("!?", "...") in the next delta
            if char == "." and text[after].isalnum():
                continue  # 3.5, e.g., v1.2
            if len(text[:after].strip()) >= MIN_SENTENCE_CHARS or char == "\n":
                return after
        return None

"""Cuts the messages a summary pass folds into episodes: short spans a prompt can take
whole.

An episode holds up to `EPISODE_MESSAGES` messages and at most half of `MEMORY_TOKENS`,
so at least two fit in the prompt's memory. A message longer than that is split at
sentence ends into several episodes of its own, so no detail is cut off the end of a
long reply. Each is made once, in the background, with its token count and the terms
the lexical ranker indexes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from roleplay.characters.persona import PersonaLanguage
from roleplay.core.settings import Settings
from roleplay.core.token_counter import count_tokens, truncate_to_tokens
from roleplay.memory.lexical_terms import terms
from roleplay.sessions.episode_store import Episode
from roleplay.sessions.store import StoredMessage, now

MIN_EPISODE_TOKENS = 48

_SENTENCE_END = re.compile(r"(?<=[.!?。…~])\s+|\n+")
_SPACE = re.compile(r"\s+")
_USER = {"ko": "사용자", "en": "User"}
_CHARACTER = {"ko": "캐릭터", "en": "Character"}


@dataclass(frozen=True)
class _Piece:
    index: int
    line: str
    tokens: int


def episode_tokens(settings: Settings) -> int:
    return max(MIN_EPISODE_TOKENS, settings.memory_tokens // 2)


def _pieces(index: int, speaker: str, content: str, cap: int) -> list[_Piece]:
    """The message as one line, or as several at sentence ends when it is longer than `cap`."""
    text = _SPACE.sub(" ", content).strip()
    line = f"{speaker}: {text}"
    tokens = count_tokens(line)
    if tokens <= cap:
        return [_Piece(index, line, tokens)]
    pieces: list[_Piece] = []
    chunk: list[str] = []
    for sentence in (s for s in _SENTENCE_END.split(content) if s.strip()):
        sentence = _SPACE.sub(" ", sentence).strip()
        if count_tokens(sentence) > cap - 8:
            sentence = truncate_to_tokens(sentence, cap - 8)
        candidate = f"{speaker}: {' '.join([*chunk, sentence])}"
        if chunk and count_tokens(candidate) > cap:
            joined = f"{speaker}: {' '.join(chunk)}"
            pieces.append(_Piece(index, joined, count_tokens(joined)))
            chunk = []
        chunk.append(sentence)
    if chunk:
        joined = f"{speaker}: {' '.join(chunk)}"
        pieces.append(_Piece(index, joined, count_tokens(joined)))
    return pieces


def _episode(group: list[_Piece], part: int) -> Episode:
    text = "\n".join(piece.line for piece in group)
    first, last = group[0].index, group[-1].index
    return Episode(id=Episode.id_for(first, last, part), first=first, last=last, text=text,
                   tokens=count_tokens(text), terms=terms(text), at=now())


def make_episodes(messages: Sequence[StoredMessage], first_index: int, *, settings: Settings,
                  character_name: str | None, language: PersonaLanguage) -> list[Episode]:
    """`messages` are the transcript from index `first_index` on, as a summary folds them."""
    cap = episode_tokens(settings)
    speakers = {"user": _USER[language], "assistant": character_name or _CHARACTER[language]}
    episodes: list[Episode] = []
    group: list[_Piece] = []
    parts: dict[tuple[int, int], int] = {}

    def close() -> None:
        if group:
            span = (group[0].index, group[-1].index)
            part = parts.get(span, 0)
            parts[span] = part + 1
            episodes.append(_episode(group, part))
            group.clear()

    for offset, message in enumerate(messages):
        if not message.content.strip() or message.role not in speakers:
            continue
        for piece in _pieces(first_index + offset, speakers[message.role], message.content, cap):
            messages_in = len({p.index for p in group} | {piece.index})
            if group and (sum(p.tokens for p in group) + piece.tokens > cap
                          or messages_in > settings.episode_messages):
                close()
            group.append(piece)
    close()
    return episodes

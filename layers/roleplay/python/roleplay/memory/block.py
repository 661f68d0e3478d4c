"""The memory block as the prompt takes it: its text and what it adds to the system prompt,
counted from the episodes' stored token counts, so a turn never encodes it again.

The block is `persona.memory_block`: a label line, then the scenes one paragraph each,
after the summary. Each paragraph break (`\\n\\n`, before the label and between scenes)
is one cl100k token, or none when it follows a punctuation mark (`.\\n\\n` is one token),
so the count is never below the encoded one and above it by at most one per scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from roleplay.characters.persona import PersonaLanguage, memory_block
from roleplay.core.token_counter import count_tokens

if TYPE_CHECKING:
    from roleplay.sessions.episode_store import Episode

BREAK_TOKENS = 1
"""A paragraph break's tokens at most."""


@dataclass(frozen=True)
class MemoryBlock:
    text: str
    tokens: int
    """Local (cl100k) tokens it adds to the system prompt it follows, its break included."""


def block_of(episodes: Sequence[Episode], language: PersonaLanguage) -> MemoryBlock:
    """The block of `episodes`, in their order."""
    label = count_tokens(memory_block([], language))
    tokens = label + sum(e.tokens for e in episodes) + BREAK_TOKENS * len(episodes)
    return MemoryBlock(memory_block([e.text for e in episodes], language), tokens)

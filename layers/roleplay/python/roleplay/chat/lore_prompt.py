"""The persona prompt with a character's lorebook entries in it, within the turn's budget.

The entries may take the book's `token_budget` (in the model's tokens), but never more
than a quarter of the context the reply leaves, nor so much that the history would
have less than its minimum once the persona and the summary are in: the conversation
outranks lore.
"""

from __future__ import annotations

from collections.abc import Sequence

from roleplay.characters.lorebook.activation import LoreSelection, select_entries
from roleplay.characters.lorebook.model import CharacterBook
from roleplay.characters.persona import (
    PersonaLanguage,
    RoleplaySetup,
    format_persona_for_roleplay,
    summary_block,
)
from roleplay.chat.context_manager import MIN_HISTORY_BUDGET
from roleplay.chat.token_ratio import corrected
from roleplay.core.settings import Settings
from roleplay.core.token_counter import count_tokens, message_tokens

LORE_SHARE = 0.25
"""Of the context left after the reply (SillyTavern's default world-info budget)."""


def lore_budget(book: CharacterBook, system_local: int, *, settings: Settings, max_tokens: int,
                ratio: float) -> int:
    """The entries' budget in local (cl100k) tokens, given the rest of the system prompt."""
    free = settings.max_context_tokens - max_tokens
    room = free - corrected(system_local, ratio) - MIN_HISTORY_BUDGET
    share = int(free * LORE_SHARE)
    wanted = min(book.token_budget, share) if book.token_budget else share
    return max(0, int(min(room, wanted) / ratio))


def persona_with_lore(
    setup: RoleplaySetup, book: CharacterBook | None, recent: Sequence[str], *,
    language: PersonaLanguage, settings: Settings, max_tokens: int, ratio: float,
    summary: str | None = None,
) -> tuple[str, LoreSelection | None]:
    """The system prompt's persona part, and which entries fired (None: no lorebook)."""
    plain = format_persona_for_roleplay(setup, language)
    if book is None or not book.entries:
        return plain, None
    system_local = message_tokens(plain) + (count_tokens(summary_block(summary, language))
                                            if summary else 0)
    budget = lore_budget(book, system_local, settings=settings, max_tokens=max_tokens, ratio=ratio)
    selection = select_entries(book, recent, setup.macro_names(language), budget)
    if not selection.fired:
        return plain, selection
    return format_persona_for_roleplay(
        setup, language, lore_before=selection.texts("before_char"),
        lore_after=selection.texts("after_char")), selection

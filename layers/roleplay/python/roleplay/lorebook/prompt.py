"""The persona prompt with a character's lorebook entries in it, within the turn's budget.

The entries may take the book's `token_budget` (in the model's tokens; a quarter of the
room left by the reply when the book names none), and never so much that the history
would have less than its minimum: the conversation outranks lore.
"""

from __future__ import annotations

from collections.abc import Sequence

from roleplay.context_manager import MIN_HISTORY_BUDGET
from roleplay.lorebook.activation import LoreSelection, select_entries
from roleplay.lorebook.model import CharacterBook
from roleplay.persona import PersonaLanguage, RoleplaySetup, format_persona_for_roleplay
from roleplay.settings import Settings
from roleplay.token_counter import message_tokens
from roleplay.token_ratio import corrected

DEFAULT_SHARE = 0.25
"""Of the context left after the reply, for a book without a `token_budget` (as
SillyTavern's default world-info budget)."""


def lore_budget(book: CharacterBook, persona_local: int, *, settings: Settings, max_tokens: int,
                ratio: float) -> int:
    """The entries' budget in local (cl100k) tokens."""
    free = settings.max_context_tokens - max_tokens
    room = free - corrected(persona_local, ratio) - MIN_HISTORY_BUDGET
    wanted = book.token_budget if book.token_budget else int(free * DEFAULT_SHARE)
    return max(0, int(min(room, wanted) / ratio))


def persona_with_lore(
    setup: RoleplaySetup, book: CharacterBook | None, recent: Sequence[str], *,
    language: PersonaLanguage, settings: Settings, max_tokens: int, ratio: float,
) -> tuple[str, LoreSelection | None]:
    """The system prompt's persona part, and which entries fired (None: no lorebook)."""
    plain = format_persona_for_roleplay(setup, language)
    if book is None or not book.entries:
        return plain, None
    budget = lore_budget(book, message_tokens(plain), settings=settings, max_tokens=max_tokens,
                         ratio=ratio)
    selection = select_entries(book, recent, setup.macro_names(language), budget)
    if not selection.fired:
        return plain, selection
    return format_persona_for_roleplay(
        setup, language, lore_before=selection.texts("before_char"),
        lore_after=selection.texts("after_char")), selection

"""Which lorebook entries fire on a turn, as the V2 spec asks frontends to do by default.

An entry fires when one of its keys occurs in the last `scan_depth` messages (a plain
substring, so a Korean key still matches with its particle: 사과 in 사과를), ignoring
case unless the entry is `case_sensitive`; a `selective` entry also needs one of its
secondary keys; `constant` entries always fire and disabled ones never do. V3's
`use_regex` keys are regular expressions, run with a time limit so a card cannot stall
a turn (and compiled through `regex_keys`, which skips a key that cannot be). With
`recursive_scanning`, fired entries' text is scanned too (a few passes).
When the fired entries exceed the budget, the lowest priority go first; the
rest are placed by `insertion_order`, before or after the character's description.

A book may be 8 MB of entries, so the work of one turn is bounded, not just the prompt:
scanning stops once `SCAN_BUDGET_S` is spent (entries not reached do not fire), an
entry's tokens are counted only as far as the budget left (`tokens_up_to`), and only
the first `MAX_OVER_BUDGET` entries left out are reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from roleplay.characters.lorebook.model import CharacterBook, LoreEntry
from roleplay.characters.lorebook.regex_keys import compiled_key
from roleplay.characters.macros import MacroNames, replace_macros
from roleplay.core.token_counter import count_tokens

logger = logging.getLogger("roleplay.characters.lorebook")

DEFAULT_SCAN_DEPTH = 2
"""SillyTavern's default when a book names none."""
REGEX_TIMEOUT_S = 0.05
"""Per key: ample for any sane pattern; a catastrophic one gives up instead of stalling."""
REGEX_TURN_BUDGET_S = 0.2
"""All regex keys of one turn together: past it, the remaining regex keys do not fire."""
SCAN_BUDGET_S = 0.3
"""All of a turn's scanning (every key, every pass): past it, no further entry fires."""
TOKEN_CHUNK_CHARS = 4096
"""Text counted at a time when only whether it fits matters (about 10 ms of Hangul)."""
MAX_OVER_BUDGET = 100
"""Entries left out by the budget that the selection still reports."""

MAX_RECURSION = 4
"""Passes over fired entries' text when a book asks for `recursive_scanning`."""

Position = Literal["before_char", "after_char"]


@dataclass(frozen=True)
class FiredEntry:
    index: int
    """The entry's place in the book's `entries`."""
    id: int | str | None
    name: str | None
    position: Position
    insertion_order: float
    rank: float
    reason: Literal["constant", "key"]
    content: str
    tokens: int
    """Its cl100k tokens; for an entry the budget left out, counted only until they
    passed what was left (so at least this many)."""


@dataclass(frozen=True)
class LoreSelection:
    fired: tuple[FiredEntry, ...] = ()
    """What goes into the prompt, in prompt order."""
    over_budget: tuple[FiredEntry, ...] = ()
    """Entries whose keys matched but that the budget left out (the first `MAX_OVER_BUDGET`)."""

    def texts(self, position: Position) -> list[str]:
        return [entry.content for entry in self.fired if entry.position == position]

    @property
    def tokens(self) -> int:
        return sum(entry.tokens for entry in self.fired)


@dataclass
class _Clock:
    """The turn's two deadlines: its regex keys', and its whole scan's."""

    started: float = field(default_factory=time.monotonic)
    stopped: bool = False

    def regex_left(self) -> float:
        return self.started + REGEX_TURN_BUDGET_S - time.monotonic()

    def regex_spent(self) -> bool:
        return self.regex_left() <= 0

    def spent(self) -> bool:
        """Whether the scan is over its budget (logged the first time it is)."""
        if not self.stopped and time.monotonic() - self.started > SCAN_BUDGET_S:
            self.stopped = True
            logger.warning("lorebook scan stopped after %.0f ms: entries not yet scanned "
                           "do not fire this turn", SCAN_BUDGET_S * 1000)
        return self.stopped


def tokens_up_to(text: str, limit: int) -> int:
    """`text`'s tokens when they are at most `limit`; else some count above `limit`,
    found without counting all of a long text."""
    if len(text) <= TOKEN_CHUNK_CHARS:
        return count_tokens(text)
    counted = 0
    for start in range(0, len(text), TOKEN_CHUNK_CHARS):
        counted += count_tokens(text[start:start + TOKEN_CHUNK_CHARS])
        if counted > limit + 1:  # cutting may add a token at the seam, never many
            return counted
    return count_tokens(text)


def _regex_matches(key: str, text: str, case_sensitive: bool, clock: _Clock) -> bool:
    if clock.regex_spent():
        return False
    pattern = compiled_key(key, case_sensitive)
    if pattern is None:
        return False
    try:
        return pattern.search(text, timeout=min(REGEX_TIMEOUT_S, clock.regex_left())) is not None
    except (TimeoutError, RecursionError, MemoryError, OverflowError, ValueError):
        return False


def _any_key(keys: Sequence[str], text: str, folded: str, entry: LoreEntry, clock: _Clock) -> bool:
    sensitive = bool(entry.case_sensitive)
    for key in keys:
        if clock.spent():
            return False
        if not key.strip():
            continue
        if entry.use_regex:
            if _regex_matches(key, text, sensitive, clock):
                return True
        elif (key in text) if sensitive else (key.casefold() in folded):
            return True
    return False


def _fires(entry: LoreEntry, text: str, folded: str,
           clock: _Clock) -> Literal["constant", "key"] | None:
    if not entry.enabled:
        return None
    if entry.constant:
        return "constant"
    if not _any_key(entry.keys, text, folded, entry, clock):
        return None
    if entry.selective and entry.secondary_keys and not _any_key(
            entry.secondary_keys, text, folded, entry, clock):
        return None
    return "key"


def _content(entry: LoreEntry, names: MacroNames) -> str:
    """The entry's text with macros replaced; leading V3 `@@decorator` lines are ours to
    read, not the model's, so they are left out."""
    lines = entry.content.strip().splitlines()
    while lines and lines[0].lstrip().startswith("@@"):
        lines.pop(0)
    return replace_macros("\n".join(lines).strip(), names)


def _scan(book: CharacterBook, text: str, names: MacroNames, done: set[int],
          clock: _Clock) -> list[FiredEntry]:
    folded = text.casefold()
    fired: list[FiredEntry] = []
    for index, entry in enumerate(book.entries):
        if clock.spent():
            break
        reason = None if index in done else _fires(entry, text, folded, clock)
        if reason is None:
            continue
        content = _content(entry, names)
        if content:
            fired.append(FiredEntry(
                index=index, id=entry.id, name=entry.name or entry.comment or None,
                position="after_char" if entry.position == "after_char" else "before_char",
                insertion_order=float(entry.insertion_order), rank=entry.rank, reason=reason,
                content=content, tokens=0))
    return fired


def select_entries(
    book: CharacterBook | None, messages: Sequence[str], names: MacroNames, budget: int,
) -> LoreSelection:
    """The entries `messages` (oldest first) fire, within `budget` cl100k tokens."""
    if book is None or not book.entries:
        return LoreSelection()
    depth = book.scan_depth if book.scan_depth is not None else DEFAULT_SCAN_DEPTH
    scanned = "\n".join(messages[-depth:]) if depth else ""
    candidates: list[FiredEntry] = []
    clock = _Clock()
    for _ in range(MAX_RECURSION if book.recursive_scanning else 1):
        fired = _scan(book, scanned, names, {c.index for c in candidates}, clock)
        if not fired:
            break
        candidates += fired
        if clock.spent():
            break
        scanned = "\n".join([scanned, *(entry.content for entry in fired)])
    kept: list[FiredEntry] = []
    left_out: list[FiredEntry] = []
    used = 0
    for candidate in sorted(candidates, key=lambda e: (-e.rank, e.index)):
        if left_out:
            if len(left_out) < MAX_OVER_BUDGET:
                left_out.append(replace(candidate, tokens=tokens_up_to(candidate.content, budget)))
            continue
        counted = replace(candidate, tokens=tokens_up_to(candidate.content, budget - used))
        if used + counted.tokens > budget:
            left_out.append(counted)
            continue
        kept.append(counted)
        used += counted.tokens
    kept.sort(key=lambda e: (e.insertion_order, e.index))
    return LoreSelection(fired=tuple(kept), over_budget=tuple(left_out))

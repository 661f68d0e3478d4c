"""Which lorebook entries fire on a turn, as the V2 spec asks frontends to do by default.

An entry fires when one of its keys occurs in the last `scan_depth` messages (a plain
substring, so a Korean key still matches with its particle: 사과 in 사과를), ignoring
case unless the entry is `case_sensitive`; a `selective` entry also needs one of its
secondary keys; `constant` entries always fire and disabled ones never do. V3's
`use_regex` keys are regular expressions, run with a time limit so a card cannot stall
a turn. With `recursive_scanning`, fired entries' text is scanned too (a few passes).
When the fired entries exceed the budget, the lowest priority go first; the
rest are placed by `insertion_order`, before or after the character's description.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from roleplay.characters.lorebook.model import CharacterBook, LoreEntry
from roleplay.characters.macros import MacroNames, replace_macros
from roleplay.core.token_counter import count_tokens

DEFAULT_SCAN_DEPTH = 2
"""SillyTavern's default when a book names none."""
REGEX_TIMEOUT_S = 0.05
"""Per key: ample for any sane pattern; a catastrophic one gives up instead of stalling."""
REGEX_TURN_BUDGET_S = 0.2
"""All regex keys of one turn together: past it, the remaining regex keys do not fire."""

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


@dataclass(frozen=True)
class LoreSelection:
    fired: tuple[FiredEntry, ...] = ()
    """What goes into the prompt, in prompt order."""
    over_budget: tuple[FiredEntry, ...] = ()
    """Entries whose keys matched but that the budget left out."""

    def texts(self, position: Position) -> list[str]:
        return [entry.content for entry in self.fired if entry.position == position]

    @property
    def tokens(self) -> int:
        return sum(entry.tokens for entry in self.fired)


def _regex_matches(key: str, text: str, case_sensitive: bool, deadline: float) -> bool:
    import regex

    left = deadline - time.monotonic()
    if left <= 0:
        return False
    pattern, flags = key, 0 if case_sensitive else regex.IGNORECASE
    if len(key) > 2 and key.startswith("/") and key.rfind("/") > 0:
        # SillyTavern's /pattern/flags spelling
        end = key.rfind("/")
        pattern, letters = key[1:end], key[end + 1:]
        if "i" in letters:
            flags |= regex.IGNORECASE
        flags |= regex.MULTILINE if "m" in letters else 0
        flags |= regex.DOTALL if "s" in letters else 0
    try:
        return regex.search(pattern, text, flags, timeout=min(REGEX_TIMEOUT_S, left)) is not None
    except (regex.error, TimeoutError):
        return False


def _any_key(keys: Sequence[str], text: str, folded: str, entry: LoreEntry,
             deadline: float) -> bool:
    sensitive = bool(entry.case_sensitive)
    for key in keys:
        if not key.strip():
            continue
        if entry.use_regex:
            if _regex_matches(key, text, sensitive, deadline):
                return True
        elif (key in text) if sensitive else (key.casefold() in folded):
            return True
    return False


def _fires(entry: LoreEntry, text: str, folded: str,
           deadline: float) -> Literal["constant", "key"] | None:
    if not entry.enabled:
        return None
    if entry.constant:
        return "constant"
    if not _any_key(entry.keys, text, folded, entry, deadline):
        return None
    if entry.selective and entry.secondary_keys and not _any_key(
            entry.secondary_keys, text, folded, entry, deadline):
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
          deadline: float) -> list[FiredEntry]:
    folded = text.casefold()
    fired: list[FiredEntry] = []
    for index, entry in enumerate(book.entries):
        reason = None if index in done else _fires(entry, text, folded, deadline)
        if reason is None:
            continue
        content = _content(entry, names)
        if content:
            fired.append(FiredEntry(
                index=index, id=entry.id, name=entry.name or entry.comment or None,
                position="after_char" if entry.position == "after_char" else "before_char",
                insertion_order=float(entry.insertion_order), rank=entry.rank, reason=reason,
                content=content, tokens=count_tokens(content)))
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
    deadline = time.monotonic() + REGEX_TURN_BUDGET_S
    for _ in range(MAX_RECURSION if book.recursive_scanning else 1):
        fired = _scan(book, scanned, names, {c.index for c in candidates}, deadline)
        if not fired:
            break
        candidates += fired
        scanned = "\n".join([scanned, *(entry.content for entry in fired)])
    limit = budget
    kept: list[FiredEntry] = []
    left_out: list[FiredEntry] = []
    used = 0
    for candidate in sorted(candidates, key=lambda e: (-e.rank, e.index)):
        if left_out or used + candidate.tokens > limit:
            left_out.append(candidate)
            continue
        kept.append(candidate)
        used += candidate.tokens
    kept.sort(key=lambda e: (e.insertion_order, e.index))
    return LoreSelection(fired=tuple(kept), over_budget=tuple(left_out))

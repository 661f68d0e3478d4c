"""A lorebook's `use_regex` keys: which may be compiled at all, compiled once each.

Matching is bounded by the regex module's `timeout`; compiling is not, and a short key
can be ruinous: `(?:(?:a{999}){999}){999}` (24 characters) makes the module expand the
counted repeats until the process runs out of memory, `(?:a{1000}){1000}` costs a
quarter of a second, and 300 nested groups raise `RecursionError` in its parser. So a
key is first read without compiling it, conservatively, and refused when the product of
its counted repeats (`{n}`, `{m,n}`, wherever they stand) or its nesting of groups is
past a bound no sane keyword comes near; only then is it compiled, with every error
the module can raise caught. Saving a card runs this on each key and refuses a bad
one by name (`lorebook_key_problems`); a turn compiles keys through the same gate and
skips (and logs, once) any that fail, so a stored book can never break a turn.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roleplay.characters.lorebook.model import CharacterBook

logger = logging.getLogger("roleplay.characters.lorebook")

MAX_REPEAT_PRODUCT = 100_000
"""Of all counted repeats in a key: `\\d{1,3}(\\.\\d{1,3}){3}` is 81; 1,000,000 takes the
module a quarter of a second to compile, and more exhausts memory."""
MAX_GROUP_DEPTH = 32
"""Parentheses open at once (counted without parsing, so a `(` in a class counts too)."""
MAX_REGEX_KEYS = 1000
"""Regex keys one book may hold (each costs a compile at save and, once, per process)."""

_COUNTED = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def pattern_and_flags(key: str, case_sensitive: bool) -> tuple[str, int]:
    """The pattern a key stands for, with SillyTavern's `/pattern/flags` spelling read."""
    import regex

    pattern, flags = key, 0 if case_sensitive else regex.IGNORECASE
    if len(key) > 2 and key.startswith("/") and key.rfind("/") > 0:
        end = key.rfind("/")
        pattern, letters = key[1:end], key[end + 1:]
        if "i" in letters:
            flags |= regex.IGNORECASE
        flags |= regex.MULTILINE if "m" in letters else 0
        flags |= regex.DOTALL if "s" in letters else 0
    return pattern, flags


def _shape_problem(pattern: str) -> str | None:
    """Why the pattern is too costly to compile, read from its text alone."""
    product = 1
    for match in _COUNTED.finditer(pattern):
        bounds = [int(number) for number in match.groups() if number]
        product *= max([1, *bounds])
        if product > MAX_REPEAT_PRODUCT:
            return (f"its counted repeats multiply past {MAX_REPEAT_PRODUCT:,}, which the regex "
                    "module expands when it compiles")
    depth = deepest = 0
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(0, depth - 1)
    if deepest > MAX_GROUP_DEPTH:
        return f"it nests {deepest} groups deep (at most {MAX_GROUP_DEPTH})"
    return None


def _compiled(pattern: str, flags: int) -> tuple[Any, str | None]:
    """The compiled pattern, or None and why not."""
    import regex

    problem = _shape_problem(pattern)
    if problem:
        return None, problem
    try:
        return regex.compile(pattern, flags), None
    except regex.error as error:
        return None, f"it is not a valid regular expression: {error}"
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError, IndexError) as error:
        return None, f"the regex module cannot compile it ({type(error).__name__})"


def key_problem(key: str, case_sensitive: bool) -> str | None:
    """Why a regex key cannot be used, or None when it compiles."""
    return _compiled(*pattern_and_flags(key, case_sensitive))[1]


@lru_cache(maxsize=2048)
def compiled_key(key: str, case_sensitive: bool) -> Any:
    """The key compiled, or None (logged once per process) when it cannot be."""
    found, problem = _compiled(*pattern_and_flags(key, case_sensitive))
    if problem:
        logger.warning("lorebook regex key skipped: %s: %.120r", problem, key)
    return found


def lorebook_key_problems(book: CharacterBook, where: str = "character_book") -> list[str]:
    """Each regex key of `book` that cannot be used, named by entry; empty when all can."""
    problems: list[str] = []
    count = 0
    for index, entry in enumerate(book.entries):
        if not entry.use_regex:
            continue
        for kind, keys in (("keys", entry.keys), ("secondary_keys", entry.secondary_keys or [])):
            for position, key in enumerate(keys):
                if not key.strip():
                    continue
                count += 1
                if count > MAX_REGEX_KEYS:
                    return [*problems, f"{where} holds more than {MAX_REGEX_KEYS} regex keys"]
                problem = key_problem(key, bool(entry.case_sensitive))
                if problem:
                    problems.append(f"{where}.entries.{index}.{kind}.{position} "
                                    f"({key[:80]!r}): {problem}")
    return problems

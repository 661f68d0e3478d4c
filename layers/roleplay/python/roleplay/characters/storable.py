"""What a character must be before it is stored: something every later read can load.

A stored character is loaded on every read of it, every turn with it and every list
page that holds it, for every user; one that cannot be loaded used to answer 500 to all
of them. So create, change and import refuse, with a 400 naming the place:

- nesting deeper than `CARD_MAX_DEPTH` (32) objects and lists: pydantic's JSON reader
  gives up near 200 levels, Python's `json` near 1,000, DynamoDB at 32;
- more than `MAX_VALUES` values in all (a list page loads up to a hundred characters);
- text that is not Unicode (a lone surrogate cannot be written as UTF-8);
- numbers DynamoDB cannot hold (38 digits, magnitudes 1E-130 to 1E126), so both stores
  take the same characters;
- a lorebook regex key that cannot be compiled (`lorebook.regex_keys`);

and, as the last word, the JSON it would be stored as must load back as a character.
The walk is iterative (no recursion to exhaust) and runs in a worker thread (`card_work`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from roleplay.characters.lorebook.regex_keys import lorebook_key_problems
from roleplay.characters.model import STORED, Character
from roleplay.core.errors import BadRequest

MAX_VALUES = 200_000
"""Objects, lists, strings and numbers in one character or card (a 5,000-entry lorebook
holds about 100,000); loading that many costs a read about 50 ms."""
MAX_DIGITS = 38
"""DynamoDB's number precision."""
SMALLEST, LARGEST = 1e-130, 1e126
"""DynamoDB's number range (of magnitudes)."""


def _path(parts: tuple[str | int, ...]) -> str:
    shown = ".".join(str(part) for part in parts[:12])
    return shown + (f"… ({len(parts)} levels)" if len(parts) > 12 else "")


def _refused(message: str, code: str) -> BadRequest:
    return BadRequest(message, code=code)


def _text_problem(text: str) -> bool:
    """Whether `text` holds a lone surrogate (only those fail to encode as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return "is not a finite number"
        magnitude = abs(value)
        if magnitude and not SMALLEST <= magnitude < LARGEST:
            return f"is outside the numbers a character may hold ({SMALLEST:g} to {LARGEST:g})"
        return None
    if value and len(str(abs(value))) > MAX_DIGITS:
        return f"has more than {MAX_DIGITS} digits"
    return None


def _children(value: Any) -> Iterator[tuple[str | int, Any]]:
    if isinstance(value, dict):
        return iter(value.items())
    return enumerate(value)


def check_tree(document: Any, *, max_depth: int, what: str) -> None:
    """Refuses `document` (parsed JSON, or a model's dump) when a later read could not
    load it back, naming where: `what` then the path, e.g. `card: data.extensions.a`."""
    seen = 0
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(document, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise _refused(f"the {what} holds more than {MAX_VALUES:,} values",
                           code="card_too_complex")
        if isinstance(value, str):
            if _text_problem(value):
                raise _refused(f"the {what} has text that is not valid Unicode (a lone "
                               f"surrogate) at {_path(path) or 'its top'}", code="invalid_card_text")
            continue
        if isinstance(value, int | float):
            problem = _number_problem(value)
            if problem:
                raise _refused(f"the {what}'s number at {_path(path)} {problem}",
                               code="invalid_card_number")
            continue
        if not isinstance(value, dict | list | tuple):
            continue
        if depth > max_depth:
            raise _refused(f"the {what} nests deeper than CARD_MAX_DEPTH={max_depth} objects "
                           f"and lists, at {_path(path)}", code="card_too_deep")
        for key, child in _children(value):
            if isinstance(key, str) and _text_problem(key):
                raise _refused(f"the {what} has a name that is not valid Unicode at "
                               f"{_path(path)}", code="invalid_card_text")
            stack.append((child, depth + 1, (*path, key)))


def checked_json(character: Character, max_depth: int) -> str:
    """The JSON `character` is stored as, once it is sure to load back (see above)."""
    check_tree(character.model_dump(), max_depth=max_depth, what="character")
    if character.character_book is not None:
        problems = lorebook_key_problems(character.character_book)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise _refused(f"a lorebook regex key cannot be used: {problems[0]}{more}",
                           code="invalid_lorebook_key")
    raw = character.model_dump_json()
    try:
        Character.model_validate_json(raw, context=STORED)
    except (ValidationError, RecursionError, ValueError) as error:
        raise _refused(f"the character would not load back once stored: {str(error)[:300]}",
                       code="character_unreadable") from None
    return raw

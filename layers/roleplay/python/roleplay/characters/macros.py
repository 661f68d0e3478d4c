"""Card macros: `{{char}}`, `{{user}}` and their V1 spellings `<BOT>`, `<USER>`.

Replaced case-insensitively in every card text that reaches a prompt or a greeting,
as the V1 spec says; `{{original}}` only where a card's `system_prompt` or
`post_history_instructions` stands in for our own text. `{{// note}}` (V3) is a
comment and disappears.

Linear in the text, whatever it holds: a comment ends at the first `}}` after it, and
that `}}` is looked up once and reused by every `{{//` before it, so a run of
unclosed `{{//` (a regex's lazy `.*?` rescans the rest of the text for each) costs
one pass, not one per opening.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MACRO = re.compile(r"\{\{\s*(char|user)\s*\}\}|<(bot|user)>|(\{\{//)", re.IGNORECASE)
_ORIGINAL = re.compile(r"\{\{\s*original\s*\}\}", re.IGNORECASE)
_CLOSE = "}}"


@dataclass(frozen=True)
class MacroNames:
    char: str
    """The character's nickname when its card has one, else its name."""
    user: str


def replace_macros(text: str, names: MacroNames) -> str:
    if "{" not in text and "<" not in text:
        return text
    parts: list[str] = []
    done = 0
    close = -1  # the `}}` that ends the latest comment; -2: the text has none left
    position = 0
    while (match := _MACRO.search(text, position)) is not None:
        start, end = match.span()
        if match.group(3):  # `{{//`: a comment up to the first `}}` after it
            if close != -2 and close < end:
                close = text.find(_CLOSE, end)
                close = -2 if close < 0 else close
            if close == -2:  # never closed: no later comment or `{{…}}` macro can be either
                position = end
                continue
            parts += [text[done:start]]
            done = position = close + len(_CLOSE)
            continue
        which = (match.group(1) or match.group(2)).lower()
        parts += [text[done:start], names.char if which in ("char", "bot") else names.user]
        done = position = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def with_original(text: str, original: str) -> str:
    """A card's replacement for our text, with `{{original}}` standing for ours."""
    return _ORIGINAL.sub(lambda _: original, text)

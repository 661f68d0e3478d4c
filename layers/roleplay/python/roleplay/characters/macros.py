"""Card macros: `{{char}}`, `{{user}}` and their V1 spellings `<BOT>`, `<USER>`.

Replaced case-insensitively in every card text that reaches a prompt or a greeting,
as the V1 spec says; `{{original}}` only where a card's `system_prompt` or
`post_history_instructions` stands in for our own text. `{{// note}}` (V3) is a
comment and disappears.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMES = re.compile(r"\{\{\s*(char|user)\s*\}\}|<(bot|user)>|\{\{//.*?\}\}", re.IGNORECASE | re.DOTALL)
_ORIGINAL = re.compile(r"\{\{\s*original\s*\}\}", re.IGNORECASE)


@dataclass(frozen=True)
class MacroNames:
    char: str
    """The character's nickname when its card has one, else its name."""
    user: str


def replace_macros(text: str, names: MacroNames) -> str:
    if "{" not in text and "<" not in text:
        return text

    def name(match: re.Match[str]) -> str:
        which = (match.group(1) or match.group(2) or "").lower()
        if not which:
            return ""
        return names.char if which in ("char", "bot") else names.user

    return _NAMES.sub(name, text)


def with_original(text: str, original: str) -> str:
    """A card's replacement for our text, with `{{original}}` standing for ours."""
    return _ORIGINAL.sub(lambda _: original, text)

"""A character's opening lines: `first_message`, then the card's `alternate_greetings`,
which clients offer as swipes. Macros are replaced as the user will read them."""

from __future__ import annotations

from roleplay.characters.macros import MacroNames, replace_macros
from roleplay.characters.model import Character
from roleplay.core.errors import BadRequest


def greetings_of(character: Character, names: MacroNames) -> list[str]:
    """Every greeting, in order; with none, the character's first sample line stands in."""
    lines = [character.first_message, *character.alternate_greetings]
    found = [replace_macros(line.strip(), names) for line in lines if line.strip()]
    if found:
        return found
    sample = _sample_line(character)
    return [replace_macros(sample, names)] if sample else []


def _sample_line(character: Character) -> str | None:
    """The character's first line in its sample dialogue, else the dialogue's first line."""
    speakers = {character.name.casefold(), "{{char}}", "<bot>"}
    if character.nickname:
        speakers.add(character.nickname.casefold())
    lines = [line.strip() for line in character.sample_dialogue.splitlines()
             if line.strip() and line.strip().upper() != "<START>"]
    for line in lines:
        speaker, sep, said = line.partition(":")
        if sep and speaker.strip().casefold() in speakers and said.strip():
            return said.strip()
    return lines[0] if lines else None


def pick_greeting(greetings: list[str], index: int | None) -> str | None:
    if not greetings:
        if index:
            raise BadRequest("this character has no greetings to choose from",
                             code="invalid_greeting_index")
        return None
    chosen = index or 0
    if chosen >= len(greetings):
        raise BadRequest(f"greeting_index {chosen} is out of range: this character has "
                         f"{len(greetings)} greeting(s)", code="invalid_greeting_index")
    return greetings[chosen]

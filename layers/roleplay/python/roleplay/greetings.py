"""A character's opening lines: `first_message`, then the card's `alternate_greetings`,
which clients offer as swipes. Macros are replaced as the user will read them."""

from __future__ import annotations

from roleplay.characters import Character
from roleplay.errors import BadRequest
from roleplay.macros import MacroNames, replace_macros


def greetings_of(character: Character, names: MacroNames) -> list[str]:
    """Every greeting, in order; with none, the character's first sample line stands in."""
    lines = [character.first_message, *character.alternate_greetings]
    found = [replace_macros(line.strip(), names) for line in lines if line.strip()]
    if found:
        return found
    for line in character.sample_dialogue.splitlines():
        line = line.strip()
        if line and line.upper() != "<START>":
            speaker, sep, said = line.partition(":")
            spoken = said.strip() if sep and speaker.strip() in (
                character.name, "{{char}}", "<BOT>") else line
            return [replace_macros(spoken, names)]
    return []


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

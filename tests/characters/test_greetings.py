"""A character's opening lines: first_message, alternate greetings, or its sample line."""

from __future__ import annotations

import pytest

from roleplay.characters.greetings import greetings_of, pick_greeting
from roleplay.characters.macros import MacroNames
from roleplay.characters.model import Character, CharacterCreate
from roleplay.core.errors import BadRequest

NAMES = MacroNames(char="민짱", user="철수")


def _character(**fields: object) -> Character:
    return Character.new(CharacterCreate.model_validate({"name": "민지", **fields}), owner="a")


def test_first_message_then_alternates_with_macros_replaced() -> None:
    character = _character(first_message="안녕, {{user}}", alternate_greetings=["", "<BOT> 왔어"])
    assert greetings_of(character, NAMES) == ["안녕, 철수", "민짱 왔어"]


def test_without_greetings_the_characters_own_sample_line_opens() -> None:
    character = _character(sample_dialogue="<START>\n{{user}}: 안녕\n{{char}}: 어서 와, {{user}}!")
    assert greetings_of(character, NAMES) == ["어서 와, 철수!"]


def test_picking_a_greeting_out_of_range_is_a_400() -> None:
    assert pick_greeting(["a", "b"], None) == "a"
    assert pick_greeting(["a", "b"], 1) == "b"
    assert pick_greeting([], None) is None
    with pytest.raises(BadRequest):
        pick_greeting(["a"], 1)
    with pytest.raises(BadRequest):
        pick_greeting([], 2)

"""Property: any character we can hold exports to a card (JSON, and inside a PNG) that
imports back to the same character."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roleplay.characters.cards import card_json, png
from roleplay.characters.model import Character, CharacterCreate

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
WORDS = st.text(st.characters(blacklist_categories=("Cs", "Z", "Cc")), min_size=1, max_size=20)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)
EXTENSIONS = st.dictionaries(TEXT.filter(lambda k: k != card_json.EXTENSION_KEY), JSON_VALUE,
                             max_size=4)

ENTRY = st.fixed_dictionaries({
    "keys": st.lists(WORDS, max_size=3), "content": TEXT, "extensions": EXTENSIONS,
    "enabled": st.booleans(), "insertion_order": st.integers(-100, 100),
}, optional={
    "case_sensitive": st.booleans(), "name": TEXT, "priority": st.integers(0, 100),
    "id": st.integers(0, 10_000) | WORDS, "comment": TEXT, "selective": st.booleans(),
    "secondary_keys": st.lists(WORDS, max_size=2), "constant": st.booleans(),
    "position": st.sampled_from(["before_char", "after_char"]), "use_regex": st.booleans(),
    "probability": st.integers(0, 100),
})
BOOK = st.fixed_dictionaries({"entries": st.lists(ENTRY, max_size=3), "extensions": EXTENSIONS},
                             optional={"name": TEXT, "scan_depth": st.integers(0, 10),
                                       "token_budget": st.integers(1, 5000),
                                       "recursive_scanning": st.booleans()})

CHARACTER = st.fixed_dictionaries({
    "name": WORDS, "persona": TEXT, "sample_dialogue": TEXT, "first_message": TEXT,
    "voice_id": st.from_regex(r"^[A-Za-z0-9_-]{1,12}$", fullmatch=True),
    "tags": st.lists(WORDS, max_size=3),
    "scenario": st.fixed_dictionaries({}, optional={
        "opponent": TEXT, "situation": WORDS, "background": TEXT}),
    "alternate_greetings": st.lists(TEXT, max_size=3), "system_prompt": TEXT,
    "post_history_instructions": TEXT, "creator_notes": TEXT, "creator": TEXT,
    "character_version": TEXT, "extensions": EXTENSIONS,
    "group_only_greetings": st.lists(TEXT, max_size=2),
}, optional={
    "character_book": BOOK, "nickname": WORDS, "source": st.lists(TEXT, max_size=2),
    "creation_date": st.integers(0, 2**40), "modification_date": st.integers(0, 2**40),
    "creator_notes_multilingual": st.dictionaries(st.sampled_from(["en", "ko", "ja"]), TEXT),
    "assets": st.lists(st.fixed_dictionaries(
        {"type": WORDS, "uri": WORDS, "name": TEXT, "ext": st.sampled_from(["png", "webp"])}),
        max_size=2),
})


def _reimported(document: Any) -> CharacterCreate:
    return card_json.character_fields(card_json.card_data(document))


def _fields(character: Character) -> dict[str, Any]:
    return character.model_dump(exclude={"id", "owner", "created_at", "updated_at", "has_image"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CHARACTER)
def test_export_then_import_gives_the_same_character(fields: dict[str, Any]) -> None:
    character = Character.new(CharacterCreate.model_validate(fields), owner="anonymous")
    v3 = json.loads(json.dumps(card_json.export_v3(character), ensure_ascii=False))
    assert _reimported(v3).model_dump() == _fields(character)

    image = png.with_card(png.placeholder_png(8), chara=_b64(card_json.export_v2(character)),
                          ccv3=_b64(card_json.export_v3(character)))
    from_png = json.loads(base64.b64decode(png.card_text(image)))
    assert _reimported(from_png).model_dump() == _fields(character)


@settings(max_examples=60, deadline=None)
@given(CHARACTER.filter(lambda f: "nickname" not in f))
def test_the_v2_twin_keeps_every_v2_field(fields: dict[str, Any]) -> None:
    character = Character.new(CharacterCreate.model_validate(fields), owner="anonymous")
    again = _reimported(json.loads(json.dumps(card_json.export_v2(character)))).model_dump()
    for name in card_json.V3_ONLY:
        again.pop(name)
    expected = _fields(character)
    for name in card_json.V3_ONLY:
        expected.pop(name)
    assert again == expected


def _b64(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()

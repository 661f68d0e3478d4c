"""One contract, run on every character store: Redis, and DynamoDB under moto."""

import asyncio
from collections.abc import Iterator

import pytest

from roleplay.characters.model import Character, CharacterCreate, CharacterUpdate, Scenario
from roleplay.characters.store import (
    CharacterStore,
    DynamoCharacterStore,
    RedisCharacterStore,
    get_character_store,
)
from roleplay.core.errors import BadRequest


@pytest.fixture(params=["redis", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[CharacterStore]:
    if request.param == "dynamodb":
        request.getfixturevalue("characters_table")
        chosen = get_character_store()
        assert isinstance(chosen, DynamoCharacterStore)
    else:
        chosen = get_character_store()
        assert isinstance(chosen, RedisCharacterStore)
    yield chosen


def _character(name: str = "민지") -> Character:
    return Character.new(
        CharacterCreate(name=name, persona="밝은 소녀", scenario=Scenario(opponent="철수"),
                        tags=["school"]),
        owner="anonymous",
    )


def test_store_returns_what_was_created(store: CharacterStore) -> None:
    character = _character()

    async def scenario() -> Character | None:
        await store.create(character)
        return await store.get(character.id)

    assert asyncio.run(scenario()) == character


def test_store_replaces_and_deletes(store: CharacterStore) -> None:
    character = _character()
    changed = character.updated(CharacterUpdate(persona="차분한 소녀"))

    async def scenario() -> tuple[Character | None, bool, Character | None, bool]:
        await store.create(character)
        await store.replace(changed)
        after_replace = await store.get(character.id)
        deleted = await store.delete(character.id)
        return after_replace, deleted, await store.get(character.id), await store.delete("nope")

    after_replace, deleted, after_delete, deleted_missing = asyncio.run(scenario())
    assert after_replace is not None and after_replace.persona == "차분한 소녀"
    assert after_replace.scenario.opponent == "철수"
    assert deleted is True
    assert after_delete is None
    assert deleted_missing is False


def test_store_pages_through_every_character_once(store: CharacterStore) -> None:
    created = [_character(f"character {n}") for n in range(7)]

    async def scenario() -> list[str]:
        for character in created:
            await store.create(character)
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = await store.list(3, cursor)
            assert len(page.items) <= 3
            seen += [c.id for c in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        return seen

    seen = asyncio.run(scenario())
    assert sorted(seen) == sorted(c.id for c in created)


def test_store_refuses_a_forged_cursor(store: CharacterStore) -> None:
    with pytest.raises(BadRequest):
        asyncio.run(store.list(3, "not-a-cursor!"))


def test_store_holds_a_whole_card(store: CharacterStore) -> None:
    """Every V2/V3 field, a lorebook, and extensions with floats (DynamoDB takes no floats)."""
    from roleplay.characters.cards.card_json import card_data, character_fields
    from tests.support.card_files import v3_card

    character = Character.new(character_fields(card_data(v3_card())), owner="anonymous")
    assert character.extensions["depth_prompt"] == {"depth": 4, "weight": 0.25}

    async def scenario() -> tuple[Character | None, list[Character]]:
        await store.create(character)
        return await store.get(character.id), (await store.list(10)).items

    fetched, listed = asyncio.run(scenario())
    assert fetched == character
    assert listed == [character]
    assert fetched is not None and fetched.character_book is not None
    assert fetched.character_book.entries[0].keys == ["사과"]
    assert fetched.extensions["other/tool"] == {"keep": [1, 2.5, None]}

"""What the characters endpoint does: create, read, page, change and delete."""

from __future__ import annotations

from roleplay.characters.cards.image_store import delete_image
from roleplay.characters.model import Character, CharacterCreate, CharacterPage, CharacterUpdate
from roleplay.characters.store import MAX_PAGE, get_character_store
from roleplay.core.errors import Forbidden, NotFound
from roleplay.core.identity import ANONYMOUS_ID, User


def _ensure_owner(character: Character, user: User) -> None:
    if user.authenticated and character.owner != user.id:
        raise Forbidden("only the character's owner may change it")


async def create_character(fields: CharacterCreate, user: User) -> Character:
    # Characters are public: an anonymous client's id (its cookie's) is not shown to everyone.
    character = Character.new(fields, owner=user.id if user.authenticated else ANONYMOUS_ID)
    await get_character_store().create(character)
    return character


async def get_character(character_id: str) -> Character:
    character = await get_character_store().get(character_id)
    if character is None:
        raise NotFound(f"no character with id {character_id!r}", code="character_not_found")
    return character


async def list_characters(limit: int, cursor: str | None) -> CharacterPage:
    return await get_character_store().list(min(limit, MAX_PAGE), cursor)


async def update_character(character_id: str, change: CharacterUpdate, user: User) -> Character:
    character = await get_character(character_id)
    _ensure_owner(character, user)
    updated = character.updated(change)
    await get_character_store().replace(updated)
    return updated


async def delete_character(character_id: str, user: User) -> None:
    character = await get_character(character_id)
    _ensure_owner(character, user)
    await get_character_store().delete(character_id)
    if character.has_image:
        await delete_image(character_id)

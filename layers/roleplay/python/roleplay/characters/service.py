"""What the characters endpoint does: create, read, page, change and delete.

Every write goes through `store_new` or `store_change`: the character is checked to be
one every later read can load (`storable`, in a worker thread, `card_work`) and counted
against its holder's per-user bounds (`holdings`) before it is stored.
"""

from __future__ import annotations

import anyio

from roleplay.characters import holdings
from roleplay.characters.card_work import off_loop
from roleplay.characters.cards.image_store import (
    delete_image,
    image_bytes,
    save_image,
    stored_image_bytes,
)
from roleplay.characters.model import Character, CharacterCreate, CharacterPage, CharacterUpdate
from roleplay.characters.storable import checked_json
from roleplay.characters.store import (
    MAX_PAGE,
    UnreadableCharacter,
    get_character_store,
    stored_character,
)
from roleplay.core.errors import Forbidden, NotFound
from roleplay.core.identity import ANONYMOUS_ID, User
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings


def _ensure_owner(owner: str | None, user: User) -> None:
    if user.authenticated and owner != user.id:
        raise Forbidden("only the character's owner may change it")


def owner_for(user: User) -> str:
    """Characters are public: an anonymous client's id (its cookie's) is not shown to everyone."""
    return user.id if user.authenticated else ANONYMOUS_ID


async def _stored_size(character: Character) -> tuple[str, int]:
    raw = await off_loop(checked_json, character, get_settings().card_max_depth)
    return raw, len(raw.encode("utf-8"))


async def store_new(character: Character, user: User, image: bytes | None = None) -> Character:
    """Stores a new character (and the picture its card came in), or refuses with a 4xx
    before anything is stored."""
    raw, size = await _stored_size(character)
    holder = holdings.holder(character.owner, user)
    store = get_character_store()
    await holdings.hold(holder, character.id, size + (image_bytes(image) if image else 0),
                        exempt=user.is_admin, exists=store.existing)
    try:
        if image is not None:
            await save_image(character.id, image)
        await store.create(character, raw)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await delete_image(character.id)
            await holdings.release([holder], character.id)
        raise
    return character


async def store_change(updated: Character, user: User) -> Character:
    """Stores a changed character, or refuses with a 4xx and leaves the stored one as it was."""
    raw, size = await _stored_size(updated)
    store = get_character_store()
    image = await stored_image_bytes(updated.id) if updated.has_image else 0
    await holdings.hold(holdings.holder(updated.owner, user), updated.id, size + image,
                        exempt=user.is_admin, exists=store.existing)
    await store.replace(updated, raw)
    return updated


async def create_character(fields: CharacterCreate, user: User) -> Character:
    return await store_new(Character.new(fields, owner=owner_for(user)), user)


async def get_character(character_id: str) -> Character:
    return _found(character_id, await get_character_store().get(character_id))


def read_key(character_id: str) -> str | None:
    """The Redis key holding the character's JSON, when characters are kept in Redis (not
    in DynamoDB, `CHARACTERS_TABLE`): a turn reads it beside its session, and
    `character_read` takes what it read."""
    return None if get_settings().characters_table else redis_keys().character(character_id)


def character_read(character_id: str, raw: str | None) -> Character:
    """`get_character`, from the value read at `read_key`."""
    return _found(character_id, stored_character(character_id, raw))


def _found(character_id: str, character: Character | None) -> Character:
    if character is None:
        raise NotFound(f"no character with id {character_id!r}", code="character_not_found")
    return character


async def list_characters(limit: int, cursor: str | None) -> CharacterPage:
    return await get_character_store().list(min(limit, MAX_PAGE), cursor)


async def update_character(character_id: str, change: CharacterUpdate, user: User) -> Character:
    character = await get_character(character_id)
    _ensure_owner(character.owner, user)
    updated = await off_loop(character.updated, change)
    return await store_change(updated, user)


async def delete_character(character_id: str, user: User) -> None:
    """Deletes the character, also one whose stored data no longer loads (its owner as
    read from that data decides who may)."""
    try:
        character = await get_character(character_id)
        owner: str | None = character.owner
    except UnreadableCharacter as unreadable:
        owner = unreadable.owner
    _ensure_owner(owner, user)
    await get_character_store().delete(character_id)
    await delete_image(character_id)
    await holdings.release([holdings.holder(owner or ANONYMOUS_ID, user), user.id], character_id)

"""What the card endpoints do: import a card file as a character, export a character as a
card, and attach a standalone lorebook to one."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Literal

from roleplay.characters import service as character_service
from roleplay.characters.card_work import off_loop
from roleplay.characters.cards import card_json, png
from roleplay.characters.cards.card_file import read_card, read_lorebook
from roleplay.characters.cards.image_store import load_image
from roleplay.characters.model import Character, CharacterUpdate
from roleplay.core.identity import User
from roleplay.core.settings import get_settings

ExportFormat = Literal["json", "png"]


@dataclass(frozen=True)
class ExportedCard:
    body: bytes
    media_type: str
    filename: str


def _card_character(body: bytes, content_type: str | None, owner: str) -> tuple[Character,
                                                                                bytes | None]:
    settings = get_settings()
    card = read_card(body, content_type, settings.card_max_bytes, settings.card_max_depth)
    character = Character.new(card.fields, owner=owner)
    if card.image is not None:
        character = character.model_copy(update={"has_image": True})
    return character, card.image


async def import_card(body: bytes, content_type: str | None, user: User) -> Character:
    """Stores the card's character; nothing is stored unless the whole file reads. The
    file is read in a worker thread (`card_work`): it may be 8 MB of work."""
    character, image = await off_loop(_card_character, body, content_type,
                                      character_service.owner_for(user))
    return await character_service.store_new(character, user, image)


def _filename(character: Character, extension: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", character.name).strip("_") or character.id
    return f"{stem[:60]}.{extension}"


def _base64_json(document: object) -> str:
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


async def export_card(character_id: str, export_format: ExportFormat) -> ExportedCard:
    character = await character_service.get_character(character_id)
    v3 = card_json.export_v3(character)
    if export_format == "json":
        body = json.dumps(v3, ensure_ascii=False, indent=2).encode("utf-8")
        return ExportedCard(body, "application/json", _filename(character, "json"))
    image = await load_image(character.id) if character.has_image else None
    body = png.with_card(image or png.placeholder_png(),
                         chara=_base64_json(card_json.export_v2(character)), ccv3=_base64_json(v3))
    return ExportedCard(body, "image/png", _filename(character, "png"))


async def attach_lorebook(character_id: str, body: bytes, content_type: str | None,
                          user: User) -> Character:
    """Makes a `lorebook_v3` file the character's `character_book` (replacing any)."""
    settings = get_settings()
    book = await off_loop(read_lorebook, body, content_type, settings.card_max_bytes,
                          settings.card_max_depth)
    return await character_service.update_character(
        character_id, CharacterUpdate(character_book=book), user)

"""`GET /v1/models`: the upstream's models, then one `character/<id>` per character.

Characters are listed as `/api/characters` lists them to the caller, up to
`MAX_CHARACTER_MODELS`; each card names its character in `name` and `metadata`,
which UIs such as Open WebUI show in their model picker.
"""

from __future__ import annotations

from roleplay.characters import service as character_service
from roleplay.characters.model import Character
from roleplay.characters.store import MAX_PAGE
from roleplay.core.identity import User
from roleplay.llm.client import llm_client
from roleplay.openai_compat.chat_completions import CHARACTER_PREFIX
from roleplay.openai_compat.models import ModelCard, ModelCardList

MAX_CHARACTER_MODELS = 1000
OWNER = "server-b"


async def _characters(user: User) -> list[Character]:
    found: list[Character] = []
    cursor: str | None = None
    while len(found) < MAX_CHARACTER_MODELS:
        page = await character_service.list_characters(MAX_PAGE, cursor)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return found[:MAX_CHARACTER_MODELS]


def character_card(character: Character) -> ModelCard:
    return ModelCard(
        id=f"{CHARACTER_PREFIX}{character.id}", created=int(character.created_at.timestamp()),
        owned_by=OWNER, name=character.name,
        metadata={"kind": "character", "character_id": character.id, "name": character.name,
                  "voice": character.voice_id, "tags": character.tags})


async def model_cards(user: User) -> ModelCardList:
    served = await llm_client().list_models()
    cards = [ModelCard(id=model.id, created=0, owned_by=model.owned_by or OWNER, name=model.id,
                       metadata={"kind": "upstream"})
             for model in served]
    cards += [character_card(character) for character in await _characters(user)]
    return ModelCardList(data=cards)

"""Lambda function `characters`: create, page, read, change and delete characters."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from mangum import Mangum
from pydantic import BaseModel

from roleplay import character_service
from roleplay.auth import current_user
from roleplay.characters import (
    ID_PATTERN,
    Character,
    CharacterCreate,
    CharacterPage,
    CharacterUpdate,
)
from roleplay.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.function_app import create_function_app
from roleplay.identity import User
from roleplay.settings import get_settings

get_settings()

router = APIRouter(prefix="/api/characters", tags=["characters"], responses=ERROR_RESPONSES)
CharacterIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="character id")]
CurrentUser = Annotated[User, Depends(current_user)]


class Deleted(BaseModel):
    id: str
    deleted: bool = True


@router.post("", status_code=201)
async def create_character(body: CharacterCreate, user: CurrentUser) -> Envelope[Character]:
    return ok(await character_service.create_character(body, user))


@router.get("")
async def list_characters(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Envelope[CharacterPage]:
    return ok(await character_service.list_characters(limit, cursor))


@router.get("/{character_id}")
async def get_character(character_id: CharacterIdPath) -> Envelope[Character]:
    return ok(await character_service.get_character(character_id))


@router.patch("/{character_id}")
async def update_character(
    character_id: CharacterIdPath, body: CharacterUpdate, user: CurrentUser
) -> Envelope[Character]:
    return ok(await character_service.update_character(character_id, body, user))


@router.delete("/{character_id}")
async def delete_character(character_id: CharacterIdPath, user: CurrentUser) -> Envelope[Deleted]:
    await character_service.delete_character(character_id, user)
    return ok(Deleted(id=character_id))


app = create_function_app("characters", [router])
handler = Mangum(app, lifespan="off")

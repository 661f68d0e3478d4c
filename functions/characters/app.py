"""Lambda function `characters`: create, page, read, change and delete characters; import
and export Character Cards (PNG, JSON, CHARX) and attach lorebooks."""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from mangum import Mangum
from pydantic import BaseModel

from roleplay.characters import service as character_service
from roleplay.characters.cards import service as card_service
from roleplay.characters.model import (
    ID_PATTERN,
    Character,
    CharacterCreate,
    CharacterPage,
    CharacterUpdate,
)
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.web.auth import current_user
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, ErrorEnvelope, ok
from roleplay.web.function_app import create_function_app

get_settings()

router = APIRouter(prefix="/api/characters", tags=["characters"], responses=ERROR_RESPONSES)
CharacterIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="character id")]
CurrentUser = Annotated[User, Depends(current_user)]


class Deleted(BaseModel):
    id: str
    deleted: bool = True


_FILE = {"schema": {"type": "string", "format": "binary"}}
CARD_UPLOAD: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "image/png": _FILE, "application/json": {"schema": {"type": "object"}},
    "application/zip": _FILE,
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": _FILE}}}}}}
LOREBOOK_UPLOAD: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": _FILE}}}}}}


UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {415: {"model": ErrorEnvelope}}


@router.post("/import", status_code=201, openapi_extra=CARD_UPLOAD, responses=UPLOAD_ERRORS)
async def import_card(request: Request, user: CurrentUser) -> Envelope[Character]:
    """A Character Card as the raw body (`image/png`, `application/json`, `application/zip`
    for CHARX) or as the multipart field `file`; answers the stored character."""
    body = await request.body()
    return ok(await card_service.import_card(body, request.headers.get("content-type"), user))


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


@router.get("/{character_id}/export", response_class=Response,
            responses={200: {"content": {"image/png": {}, "application/json": {}}}})
async def export_card(
    character_id: CharacterIdPath,
    export_format: Annotated[card_service.ExportFormat, Query(alias="format")] = "json",
) -> Response:
    """The character as a V3 card (`json`), or embedded in its PNG (`png`: the imported
    image, else a placeholder) with `chara` (V2) and `ccv3` (V3) chunks."""
    card = await card_service.export_card(character_id, export_format)
    return Response(card.body, media_type=card.media_type, headers={
        "Content-Disposition": f'attachment; filename="{card.filename}"'})


@router.put("/{character_id}/lorebook", openapi_extra=LOREBOOK_UPLOAD, responses=UPLOAD_ERRORS)
async def attach_lorebook(
    character_id: CharacterIdPath, request: Request, user: CurrentUser
) -> Envelope[Character]:
    """A `lorebook_v3` file becomes the character's `character_book`."""
    body = await request.body()
    return ok(await card_service.attach_lorebook(
        character_id, body, request.headers.get("content-type"), user))


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

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

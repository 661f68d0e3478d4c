"""Lambda function `users`: the caller's own persona (who they play in role-play)."""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from typing import Annotated

from fastapi import APIRouter, Depends
from mangum import Mangum

from roleplay.characters import user_persona
from roleplay.characters.user_persona import UserPersona
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.web.auth import current_user
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.web.function_app import create_function_app

get_settings()

router = APIRouter(prefix="/api/users", tags=["users"], responses=ERROR_RESPONSES)
CurrentUser = Annotated[User, Depends(current_user)]


@router.get("/me/persona")
async def get_persona(user: CurrentUser) -> Envelope[UserPersona | None]:
    """The caller's persona; null until they set one."""
    return ok(await user_persona.load_user_persona(user))


@router.put("/me/persona")
async def put_persona(body: UserPersona, user: CurrentUser) -> Envelope[UserPersona]:
    """Sets who the caller plays: `{{user}}` in cards, and the scenario's opponent by default."""
    return ok(await user_persona.save_user_persona(user, body))


app = create_function_app("users", [router])
handler = Mangum(app, lifespan="off")

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

"""Lambda function `voices`: the voices speech can be made with."""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from fastapi import APIRouter
from mangum import Mangum

from roleplay.core.settings import get_settings
from roleplay.speech.voice_catalog import PublicVoice, public_voices
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.web.function_app import create_function_app

get_settings()

router = APIRouter(tags=["tts"], responses=ERROR_RESPONSES)


@router.get("/api/tts/voices")
async def voices() -> Envelope[list[PublicVoice]]:
    return ok(public_voices())


app = create_function_app("voices", [router])
handler = Mangum(app, lifespan="off")

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

"""Lambda function `tts`: text to speech through GPT-SoVITS on Server A."""

from fastapi import APIRouter
from mangum import Mangum

from roleplay.envelope import ERROR_RESPONSES
from roleplay.errors import NotConfigured
from roleplay.function_app import create_function_app
from roleplay.settings import get_settings

get_settings()

router = APIRouter(tags=["tts"], responses=ERROR_RESPONSES)


@router.post("/api/tts")
async def synthesize() -> None:
    raise NotConfigured("speech synthesis is not available in this build yet",
                        code="tts_unavailable")


app = create_function_app("tts", [router])
handler = Mangum(app, lifespan="off")

"""Lambda function `chat`: role-play turns with a character, and their sessions."""

from fastapi import APIRouter
from mangum import Mangum

from roleplay.envelope import ERROR_RESPONSES
from roleplay.function_app import create_function_app
from roleplay.settings import get_settings

get_settings()

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)

app = create_function_app("chat", [router])
handler = Mangum(app, lifespan="off")

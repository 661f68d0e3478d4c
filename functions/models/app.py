"""Lambda function `models`: the models the LLM upstream really serves."""

from fastapi import APIRouter
from mangum import Mangum

from roleplay.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.function_app import create_function_app
from roleplay.model_catalog import ModelList, list_models
from roleplay.settings import get_settings

get_settings()

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)


@router.get("/api/chat/models")
async def models() -> Envelope[ModelList]:
    return ok(await list_models())


app = create_function_app("models", [router])
handler = Mangum(app, lifespan="off")

"""Lambda function `models`: the models the LLM upstream really serves."""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from fastapi import APIRouter
from mangum import Mangum

from roleplay.core.settings import get_settings
from roleplay.llm.model_catalog import ModelList, list_models
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.web.function_app import create_function_app

get_settings()

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)


@router.get("/api/chat/models")
async def models() -> Envelope[ModelList]:
    return ok(await list_models())


app = create_function_app("models", [router])
handler = Mangum(app, lifespan="off")

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

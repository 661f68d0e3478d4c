"""Lambda function `openai_api`: OpenAI's API (`/v1/...`) over our characters and voices.

A function of its own rather than routes on `chat`: the chat function's cold start
stays as it is, and OpenAI clients (which poll `/v1/models` and call in bursts) keep
their own warm containers. Errors under `/v1` answer in OpenAI's shape. Through
Mangum a stream arrives whole; the local runner streams it.
"""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from mangum import Mangum

from roleplay.chat.background_jobs import job_runner
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.openai_compat import chat_completions, model_list, speech
from roleplay.openai_compat.caller import openai_caller
from roleplay.openai_compat.errors import OpenAIErrorShape
from roleplay.openai_compat.models import (
    ERROR_RESPONSES,
    ChatCompletion,
    ChatCompletionRequest,
    ModelCardList,
    SpeechRequest,
)
from roleplay.web.function_app import create_function_app

get_settings()

router = APIRouter(tags=["openai"], responses=ERROR_RESPONSES)
Caller = Annotated[User, Depends(openai_caller)]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/models")
async def models(user: Caller) -> ModelCardList:
    return await model_list.model_cards(user)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "the completion, or with `stream: true` chunks as Server-Sent Events"}},
)
async def chat_completion(
    body: ChatCompletionRequest, user: Caller, request: Request, background: BackgroundTasks,
    x_session_id: Annotated[str | None, Header()] = None,
) -> Response:
    answer = await chat_completions.create_completion(
        body, user, session_header=x_session_id,
        client=request.client.host if request.client else "unknown",
        jobs=job_runner(background.add_task))
    headers = {"X-Session-Id": answer.session_id} if answer.session_id else {}
    if answer.events is not None:
        return StreamingResponse(answer.events, media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **headers})
    assert answer.completion is not None
    return JSONResponse(answer.completion.model_dump(), headers=headers)


@router.post(
    "/v1/audio/speech",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}, "audio/pcm": {}}, "description": "the audio"}},
)
async def audio_speech(body: SpeechRequest, user: Caller, request: Request) -> Response:
    client = request.client.host if request.client else "unknown"
    answer = await speech.speak(body, user, client)
    return Response(answer.audio, media_type=answer.media_type,
                    headers={"X-Sample-Rate": str(answer.sample_rate)})


app = create_function_app("openai_api", [router])
app.add_middleware(OpenAIErrorShape)
handler = Mangum(app, lifespan="off")

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

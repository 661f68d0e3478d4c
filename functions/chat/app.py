"""Lambda function `chat`: role-play turns with a character, and their sessions.

`"stream": true` answers with Server-Sent Events. Through Mangum (Lambda behind an
HTTP API) the events arrive all at once at the end; the local runner streams them.
"""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Path
from fastapi.responses import StreamingResponse
from mangum import Mangum

from roleplay import chat_service, chat_stream, session_service
from roleplay.auth import current_user
from roleplay.background_jobs import job_runner
from roleplay.characters import ID_PATTERN
from roleplay.chat_models import (
    ChatReply,
    ChatRequest,
    ReleaseRequest,
    SessionEnded,
    SessionView,
    SlotReleased,
)
from roleplay.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.function_app import create_function_app
from roleplay.identity import User
from roleplay.settings import get_settings
from roleplay.sign_in_guard import SignedInOnly

get_settings()

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)
CurrentUser = Annotated[User, Depends(current_user)]
SessionIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="session id")]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=200,
    description="The same key on a retry returns the reply already stored or in flight.")]


@router.post(
    "/api/chat",
    response_model=Envelope[ChatReply],
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "the reply, or with `stream: true` Server-Sent Events"}},
)
async def chat(
    body: ChatRequest, user: CurrentUser, background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
) -> Envelope[ChatReply] | StreamingResponse:
    jobs = job_runner(background.add_task)
    if body.stream:
        events = await chat_stream.open_stream(body, user, jobs, idempotency_key=idempotency_key)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return ok(await chat_service.chat_turn(body, user, jobs, idempotency_key=idempotency_key))


@router.get("/api/chat/sessions/{session_id}")
async def get_session(session_id: SessionIdPath, user: CurrentUser) -> Envelope[SessionView]:
    return ok(await session_service.session_view(session_id, user))


@router.delete("/api/chat/sessions/{session_id}")
async def end_session(session_id: SessionIdPath, user: CurrentUser) -> Envelope[SessionEnded]:
    return ok(await session_service.end_session(session_id, user))


@router.post("/api/chat/release")
async def release(user: CurrentUser, body: ReleaseRequest | None = None) -> Envelope[SlotReleased]:
    """Frees the caller's place under the concurrent-user cap now (logout, leaving the chat)."""
    return ok(await session_service.release_slot(user, body.session_id if body else None))


app = create_function_app("chat", [router])
handler = Mangum(app, lifespan="off")
# The streaming chat (run.sh) serves this one: its Function URL is not behind API Gateway.
signed_in_app = SignedInOnly(app)

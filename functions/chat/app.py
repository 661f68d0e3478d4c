"""Lambda function `chat`: role-play turns with a character, and their sessions.

`"stream": true` answers with Server-Sent Events. Through Mangum (Lambda behind an
HTTP API) the events arrive all at once at the end; the local runner streams them.

The turn itself (`roleplay.chat.service`, `stream`, `control.generated_turns`: the LLM
client's dialect, prompt, context fitting, speech) is imported by the first request that
takes a turn, not at the cold start: the session, list, memory and control routes never
need it (issue 30; tests/deploy/test_cold_imports.py).
"""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from mangum import Mangum

from roleplay.characters.ids import ID_PATTERN
from roleplay.chat import (
    conversation_list_service,
    memory_service,
    session_service,
    sillytavern_chat,
)
from roleplay.chat.background_jobs import job_runner
from roleplay.chat.control import service as control_service
from roleplay.chat.control.models import (
    EditRequest,
    GenerateRequest,
    MessageChanged,
    MessagePage,
    MessagesDeleted,
    PinRequest,
    PinsView,
    SelectRequest,
    SummaryRequest,
    SummaryView,
)
from roleplay.chat.models import (
    ChatReply,
    ChatRequest,
    ConversationPage,
    ConversationPatch,
    ConversationRenamed,
    MemoriesView,
    MemoryForgotten,
    ReleaseRequest,
    SessionEnded,
    SessionView,
    SlotReleased,
)
from roleplay.core.errors import ApiError
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.web.auth import current_user
from roleplay.web.direct_route import direct_json_route, media_type
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, ErrorEnvelope, ok
from roleplay.web.function_app import create_function_app
from roleplay.web.sign_in_guard import SignedInOnly

get_settings()

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)
CurrentUser = Annotated[User, Depends(current_user)]
SessionIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="session id")]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
IDEMPOTENCY_KEY_MAX = 200
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=IDEMPOTENCY_KEY_MAX,
    description="The same key on a retry returns the reply already stored or in flight.")]


async def chat(
    body: ChatRequest, user: CurrentUser, background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
) -> Envelope[ChatReply] | StreamingResponse:
    jobs = job_runner(background.add_task)
    if body.stream:
        from roleplay.chat import stream as chat_stream

        events = await chat_stream.open_stream(body, user, jobs, idempotency_key=idempotency_key)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    from roleplay.chat import service as chat_service

    return ok(await chat_service.chat_turn(body, user, jobs, idempotency_key=idempotency_key))


async def chat_direct(body: ChatRequest, request: Request,
                      background: BackgroundTasks) -> Envelope[ChatReply] | StreamingResponse | None:
    """`chat` as FastAPI would call it, without its dependency solving (every turn comes
    here); an `Idempotency-Key` it would refuse goes to FastAPI."""
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX:
        return None
    return await chat(body, await current_user(request), background, key)


router.add_api_route(
    "/api/chat", chat, methods=["POST"],
    response_model=Envelope[ChatReply],
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "the reply, or with `stream: true` Server-Sent Events"}},
    route_class_override=direct_json_route(ChatRequest, chat_direct),
)


@router.get("/api/chat/sessions/{session_id}")
async def get_session(session_id: SessionIdPath, user: CurrentUser) -> Envelope[SessionView]:
    return ok(await session_service.session_view(session_id, user))


@router.delete("/api/chat/sessions/{session_id}")
async def end_session(session_id: SessionIdPath, user: CurrentUser) -> Envelope[SessionEnded]:
    return ok(await session_service.end_session(session_id, user))


class JsonRequired(ApiError):
    status_code = 415
    code = "json_required"


def not_cross_site(request: Request) -> None:
    """Release acts on the caller's cookie alone, so a page on another site must not be able
    to send it: a form or a `no-cors` fetch (no preflight) can carry neither a JSON content
    type nor an `Authorization` header, and one of the two is required here."""
    sent = media_type(request)
    if sent == "application/json" or sent.endswith("+json"):
        return
    if request.headers.get("authorization", "").strip():
        return
    raise JsonRequired("send Content-Type: application/json (an empty body or {} will do) or "
                       "an Authorization header: a page on another site can send neither")


@router.post("/api/chat/release", dependencies=[Depends(not_cross_site)],
             responses={415: {"model": ErrorEnvelope}})
async def release(user: CurrentUser, body: ReleaseRequest | None = None) -> Envelope[SlotReleased]:
    """Frees the caller's place under the concurrent-user cap now (logout, leaving the chat).
    A JSON request (`Content-Type: application/json`, the body `{}` or none) or one with an
    `Authorization` header: anything a cross-site form could send is 415 `json_required`."""
    return ok(await session_service.release_slot(user, body.session_id if body else None))


# --- conversation control (issue 18): roleplay.control ----------------------------------
MessageIdPath = Annotated[str, Path(max_length=100, description="message id")]
PinIdPath = Annotated[str, Path(max_length=100, description="pin id")]
EpisodeIdPath = Annotated[str, Path(max_length=40, pattern=r"^e\d+-\d+(\.\d+)?$",
                                    description="episode id, as `GET .../memories` lists it")]
SESSION = "/api/chat/sessions/{session_id}"
CursorQuery = Annotated[str | None, Query(
    description="`next_cursor` of the previous page, as it came; anything else is 400 `bad_cursor`")]


# --- the user's conversations (issue 31): roleplay.chat.conversation_list_service --------
@router.get("/api/chat/sessions")
async def list_sessions(
    user: CurrentUser, cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    character_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> Envelope[ConversationPage]:
    """The caller's conversations, newest first, hot (in Redis) and cold (moved out, still
    listed); `?character_id=` keeps one character's."""
    return ok(await conversation_list_service.list_conversations(
        user, limit=limit, cursor=cursor, character_id=character_id))


@router.patch(SESSION)
async def rename_session(session_id: SessionIdPath, body: ConversationPatch,
                         user: CurrentUser) -> Envelope[ConversationRenamed]:
    """Sets the title the list shows."""
    return ok(await conversation_list_service.rename(session_id, body.title, user))


STREAMED: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {}},
          "description": "the reply, or with `stream: true` Server-Sent Events as on /api/chat"}}


async def _generated(action: Literal["regenerate", "continue"], session_id: str,
                     body: GenerateRequest, user: User,
                     background: BackgroundTasks) -> Envelope[ChatReply] | StreamingResponse:
    from roleplay.chat.control import generated_turns

    jobs = job_runner(background.add_task)
    if body.stream:
        events = await generated_turns.generate_stream(action, session_id, body, user, jobs)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return ok(await generated_turns.generate(action, session_id, body, user, jobs))


@router.post(SESSION + "/regenerate", response_model=Envelope[ChatReply], responses=STREAMED)
async def regenerate(session_id: SessionIdPath, user: CurrentUser, background: BackgroundTasks,
                     body: GenerateRequest | None = None) -> Envelope[ChatReply] | StreamingResponse:
    """A new reply to the last user message; the previous one stays as an alternative."""
    return await _generated("regenerate", session_id, body or GenerateRequest(), user, background)


@router.post(SESSION + "/continue", response_model=Envelope[ChatReply], responses=STREAMED)
async def continue_reply(session_id: SessionIdPath, user: CurrentUser, background: BackgroundTasks,
                         body: GenerateRequest | None = None) -> Envelope[ChatReply] | StreamingResponse:
    """Extends the last assistant reply; stored as one message."""
    return await _generated("continue", session_id, body or GenerateRequest(), user, background)


@router.get(SESSION + "/messages")
async def list_messages(session_id: SessionIdPath, user: CurrentUser, cursor: CursorQuery = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Envelope[MessagePage]:
    return ok(await control_service.page(session_id, user, cursor, limit))


@router.post(SESSION + "/messages/{message_id}/select")
async def select_alternative(session_id: SessionIdPath, message_id: MessageIdPath,
                             body: SelectRequest, user: CurrentUser) -> Envelope[MessageChanged]:
    return ok(await control_service.select(session_id, message_id, body.index, user))


@router.patch(SESSION + "/messages/{message_id}")
async def edit_message(session_id: SessionIdPath, message_id: MessageIdPath, body: EditRequest,
                       user: CurrentUser) -> Envelope[MessageChanged]:
    return ok(await control_service.edit(session_id, message_id, body.content, user))


@router.delete(SESSION + "/messages/{message_id}")
async def delete_message(session_id: SessionIdPath, message_id: MessageIdPath, user: CurrentUser,
                         and_after: bool = False) -> Envelope[MessagesDeleted]:
    """Deletes the message; `and_after=true` rewinds to it (it and all after it go)."""
    return ok(await control_service.delete(session_id, message_id, user, and_after=and_after))


@router.put(SESSION + "/summary")
async def put_summary(session_id: SessionIdPath, body: SummaryRequest,
                      user: CurrentUser) -> Envelope[SummaryView]:
    return ok(await control_service.put_summary(session_id, body.text, user))


@router.post(SESSION + "/pins")
async def add_pin(session_id: SessionIdPath, body: PinRequest, user: CurrentUser) -> Envelope[PinsView]:
    return ok(await control_service.pin(session_id, body.text, user))


@router.delete(SESSION + "/pins")
async def clear_pins(session_id: SessionIdPath, user: CurrentUser) -> Envelope[PinsView]:
    return ok(await control_service.unpin(session_id, None, user))


@router.delete(SESSION + "/pins/{pin_id}")
async def remove_pin(session_id: SessionIdPath, pin_id: PinIdPath,
                     user: CurrentUser) -> Envelope[PinsView]:
    return ok(await control_service.unpin(session_id, pin_id, user))


# --- memory (issue 28): roleplay.chat.memory_service -------------------------------------
@router.get(SESSION + "/memories")
async def list_memories(session_id: SessionIdPath, user: CurrentUser) -> Envelope[MemoriesView]:
    """The conversation's episodes (turns that left the window), oldest first."""
    return ok(await memory_service.list_memories(session_id, user))


@router.delete(SESSION + "/memories/{episode_id}")
async def forget_memory(session_id: SessionIdPath, episode_id: EpisodeIdPath,
                        user: CurrentUser) -> Envelope[MemoryForgotten]:
    """Forgets one episode: no later prompt recalls it."""
    return ok(await memory_service.forget_memory(session_id, episode_id, user))


# --- SillyTavern chat files (issue 27): roleplay.chat.sillytavern_chat -------------------
CharacterIdQuery = Annotated[str, Query(pattern=ID_PATTERN,
                                        description="the character the new session talks to")]


@router.get(SESSION + "/export", response_class=Response, responses={
    200: {"content": {sillytavern_chat.MEDIA_TYPE: {}},
          "description": "SillyTavern's chat file (JSONL), as a download"}})
async def export_session(
    session_id: SessionIdPath, user: CurrentUser,
    export_format: Annotated[sillytavern_chat.ExportFormat, Query(alias="format")] = "sillytavern",
) -> Response:
    """The session as SillyTavern's chat file: a header line, then a line per message."""
    exported = await sillytavern_chat.export_chat(session_id, user)
    return Response(exported.body, media_type=sillytavern_chat.MEDIA_TYPE,
                    headers={"Content-Disposition": exported.content_disposition})


@router.post("/api/chat/sessions/import", status_code=201, openapi_extra=sillytavern_chat.UPLOAD)
async def import_session(request: Request, user: CurrentUser,
                         character_id: CharacterIdQuery) -> Envelope[sillytavern_chat.ImportedChat]:
    """A SillyTavern chat file (the raw body, or the multipart field `file`) as a new
    session of the caller with the character `character_id`."""
    body = await request.body()
    return ok(await sillytavern_chat.import_chat(
        body, request.headers.get("content-type"), character_id, user))


app = create_function_app("chat", [router])
handler = Mangum(app, lifespan="off")
# The streaming chat (run.sh) serves this one: its Function URL is not behind API Gateway.
signed_in_app = SignedInOnly(app)

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

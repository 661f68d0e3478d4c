"""Lambda function `tts`: text to speech (GPT-SoVITS on Server A, or eSpeak NG), and the audio.

Besides HTTP events it takes the speech jobs that chat hands off in `delayed` TTS mode
(an asynchronous invocation whose event is `{"kind": "speech", ...}`).
"""

from roleplay.web import cold_start  # first: no garbage collection during the import

# isort: split
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from mangum import Mangum

from roleplay.characters.ids import ID_PATTERN
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.sessions.concurrent_user_limiter import ConcurrentUserLimiter
from roleplay.speech import tts_service
from roleplay.speech.tts_models import AudioPending, TtsRequest, TtsResult
from roleplay.speech.voice_catalog import voice_by_id
from roleplay.web.auth import current_user
from roleplay.web.envelope import ERROR_RESPONSES, Envelope, ok
from roleplay.web.function_app import create_function_app

get_settings()

router = APIRouter(tags=["tts"], responses=ERROR_RESPONSES)
CurrentUser = Annotated[User, Depends(current_user)]
FileIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="audio file id")]
LinkPart = Annotated[str | None, Query(description="part of the signed URL Server B handed out")]
limiter = ConcurrentUserLimiter()


@router.post(
    "/api/tts",
    response_model=Envelope[TtsResult],
    responses={200: {"content": {"audio/wav": {}},
                     "description": "`{audio_url, duration, file_id}`, or with `return_binary` the audio "
                                    "(in streaming_mode 1-3 with GPT-SoVITS, a WAV sent as it is made: "
                                    "chunked, data size 0 in its header)"}},
)
async def synthesize(body: TtsRequest, user: CurrentUser) -> Any:
    """Metered by the service (quotas, the user's places, the seconds made), once."""
    await limiter.ensure_admitted(user)
    if body.return_binary and (stream := await tts_service.synthesize_stream(body, user)) is not None:
        return StreamingResponse(stream, media_type="audio/wav", headers={"Cache-Control": "no-store"})
    audio = await tts_service.synthesize(body, user)
    if body.return_binary:
        return Response(audio.audio, media_type=audio.media_type,
                        headers={"X-Audio-Duration": f"{audio.duration_s:.3f}"})
    return ok(await tts_service.store(audio, voice_by_id(body.voice_id)))


@router.get(
    "/api/audio/{file_id}",
    responses={200: {"content": {"audio/wav": {}},
                     "description": "the audio; while it is still being spoken (streaming_mode 1-3), "
                                    "a WAV that grows: chunked, data size 0 in its header"},
               202: {"model": Envelope[AudioPending], "description": "not spoken yet"},
               307: {"description": "the audio is in S3: follow the presigned URL"}},
)
async def audio(file_id: FileIdPath, expires: LinkPart = None, sig: LinkPart = None) -> Response:
    """Only through the signed URL that made the audio's `audio_url`: the signature is the
    key, so a browser's `<audio src>` plays it with no header, and nobody else's does."""
    found = await tts_service.audio_file(file_id, expires=expires, sig=sig)
    if found.status == "pending":
        return JSONResponse(ok(AudioPending(file_id=file_id)).model_dump(), status_code=202,
                            headers={"Retry-After": "1"})
    if found.redirect_to:
        return RedirectResponse(found.redirect_to, status_code=307)
    if found.stream is not None:  # still being spoken: chunked, data size 0 in the WAV header
        return StreamingResponse(found.stream, media_type=found.media_type,
                                 headers={"Cache-Control": "no-store"})
    return Response(found.data, media_type=found.media_type,
                    headers={"Cache-Control": "private, max-age=3600"})


app = create_function_app("tts", [router])
_http = Mangum(app, lifespan="off")


def handler(event: dict[str, Any], context: Any) -> Any:
    """HTTP API events through Mangum; speech jobs straight to the layer."""
    if isinstance(event, dict) and event.get("kind") == "speech":
        from roleplay.chat.background_jobs import handle_job_event

        return handle_job_event(event)
    return _http(event, context)

cold_start.handler_imported()  # last: what the import built is frozen, collection resumes

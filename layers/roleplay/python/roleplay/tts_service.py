"""What the speech endpoints and chat do with speech: speak text in a configured voice,
and keep the audio where a client can fetch it.

The engine is whichever `speech_engine()` picks (GPT-SoVITS on Server A, or the
embedded eSpeak NG); the audio goes to `get_audio_store()` (a local folder or S3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roleplay.audio_store import get_audio_store
from roleplay.background_jobs import SpeechJob
from roleplay.errors import ApiError, NotFound, UpstreamError
from roleplay.identity import User
from roleplay.settings import get_settings
from roleplay.speech import SynthesizedAudio, checked_text, joined_wav, speech_engine
from roleplay.speech_slots import speech_slot
from roleplay.speech_text import SentenceSplitter
from roleplay.tts_models import TtsRequest, TtsResult
from roleplay.voice_catalog import Voice, voice_by_id

AUDIO_PATH = "/api/audio/{file_id}"


async def synthesize(request: TtsRequest, user: User) -> SynthesizedAudio:
    """`POST /api/tts`: one request, one synthesis, within `TTS_MAX_CHARS`, holding one of
    the user's places (`speech_slots`); text with nothing to say is refused first."""
    voice = voice_by_id(request.voice_id)
    checked_text(request.text)
    async with speech_slot(user.id):
        return await speech_engine().synthesize(request.text, voice, speed=request.speed,
                                                language=request.language,
                                                streaming_mode=request.streaming_mode)


async def store(audio: SynthesizedAudio, voice: Voice) -> TtsResult:
    stored = await get_audio_store().put(audio.audio, audio.media_type)
    return TtsResult(audio_url=stored.url, file_id=stored.file_id, duration=round(audio.duration_s, 3),
                     media_type=audio.media_type, voice_id=voice.id)


def pieces_of(text: str, limit: int) -> list[str]:
    """`text` in sentence-aligned pieces of at most `limit` characters (a longer sentence
    is cut at a space), so a long reply is spoken whole rather than refused."""
    pieces: list[str] = []
    splitter = SentenceSplitter(strip_directions=False, first_piece_early=False)
    for sentence in [*splitter.feed(text), *splitter.flush()]:
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 1, limit)
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= limit:
            pieces[-1] = f"{pieces[-1]} {sentence}"
        elif sentence:
            pieces.append(sentence)
    return pieces


async def say(text: str, voice: Voice, *, speed: float = 1.0, language: str | None = None,
              streaming_mode: int = 0) -> SynthesizedAudio:
    """Any length of text as one WAV, synthesized piece by piece under `TTS_MAX_CHARS`."""
    engine = speech_engine()
    parts = [await engine.synthesize(piece, voice, speed=speed, language=language,
                                     streaming_mode=streaming_mode)
             for piece in pieces_of(text, get_settings().tts_max_chars)]
    if not parts:
        raise UpstreamError("there was nothing to speak")
    try:
        return joined_wav(parts)
    except ValueError as error:
        raise UpstreamError(f"the speech engine's pieces do not join: {error}") from None


async def speak(text: str, voice: Voice, *, speed: float = 1.0, language: str | None = None,
                streaming_mode: int = 0) -> TtsResult:
    """`say`, stored: what chat hands its client as `audio_url`."""
    audio = await say(text, voice, speed=speed, language=language, streaming_mode=streaming_mode)
    return await store(audio, voice)


async def reserve() -> tuple[str, str]:
    """A file id and its URL, before the audio exists: the URL answers 202 until it does."""
    file_id = await get_audio_store().reserve()
    return file_id, AUDIO_PATH.format(file_id=file_id)


async def speak_into(job: SpeechJob) -> Literal["ready", "failed"]:
    """Fills a reserved file; on failure the reservation goes, so its URL answers 404."""
    audio_store = get_audio_store()
    try:
        audio = await say(job.text, voice_by_id(job.voice_id), speed=job.speed,
                          language=job.language, streaming_mode=job.streaming_mode)
        await audio_store.fill(job.file_id, audio.audio, audio.media_type)
    except ApiError:
        await audio_store.discard(job.file_id)
        return "failed"
    return "ready"


@dataclass(frozen=True)
class AudioFile:
    status: Literal["ready", "pending"]
    data: bytes | None = None
    media_type: str | None = None
    redirect_to: str | None = None


async def audio_file(file_id: str) -> AudioFile:
    """Stored audio: its bytes (local), where to fetch it (S3), or that it is coming."""
    audio_store = get_audio_store()
    status = await audio_store.status(file_id)
    if status == "pending":
        return AudioFile("pending")
    if status == "ready":
        if audio_store.redirects:
            return AudioFile("ready", redirect_to=await audio_store.url(file_id))
        found = await audio_store.get(file_id)
        if found is not None:
            return AudioFile("ready", data=found[0], media_type=found[1])
    raise NotFound("no such audio, or it has expired", code="audio_not_found")

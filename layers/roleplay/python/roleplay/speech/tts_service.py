"""What the speech endpoints and chat do with speech: speak text in a configured voice,
and keep the audio where a client can fetch it.

The engine is whichever `speech_engine()` picks (GPT-SoVITS on Server A, or the
embedded eSpeak NG); the audio goes to `get_audio_store()` (a local folder or S3).

With `streaming_mode` 1-3, an engine that streams (GPT-SoVITS) and a store that can
grow a file (the local one), speech is live (`speak_live`): its URL serves a WAV that
grows as chunks arrive, from the first chunk on, and the whole file lands once the
synthesis is done. Otherwise speech is stored once it is complete, as in mode 0.

Every audio URL handed out is signed (`audio_links`, or S3's presigned URLs), and
`audio_file` serves nothing to a request without a good signature. Each synthesis made
for a user holds one of their places (`allowance`): `/api/tts` is metered here whole
(quota, place, seconds); chat speech names its `speaker`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal

import anyio

from roleplay.core.errors import ApiError, NotFound, UpstreamError
from roleplay.core.identity import User
from roleplay.core.job_models import SpeechJob
from roleplay.core.settings import get_settings
from roleplay.ops import quotas
from roleplay.speech import audio_links
from roleplay.speech.allowance import Meter, metered, place_of
from roleplay.speech.audio import (
    WAV_MEDIA_TYPE,
    PcmChunk,
    PcmFormat,
    StreamingSpeechEngine,
    SynthesizedAudio,
    checked_text,
    joined_wav,
    pcm_wav,
    streaming_wav_header,
)
from roleplay.speech.audio_store import GrowingAudioStore, get_audio_store
from roleplay.speech.engine import speech_engine
from roleplay.speech.text import SentenceSplitter
from roleplay.speech.tts_models import TtsRequest, TtsResult
from roleplay.speech.voice_catalog import Voice, voice_by_id

NO_AUDIO = "no such audio, or it (or its link) has expired"
"""One answer for missing audio and for a link that does not open it: neither tells which."""


async def synthesize(request: TtsRequest, user: User) -> SynthesizedAudio:
    """`POST /api/tts`: one request, one synthesis, within `TTS_MAX_CHARS`, metered as the
    user's (`allowance`: quotas, one of their places, the seconds counted); text with
    nothing to say is refused first."""
    voice = voice_by_id(request.voice_id)
    checked_text(request.text)
    async with metered(user) as meter:
        audio = await speech_engine().synthesize(request.text, voice, speed=request.speed,
                                                 language=request.language,
                                                 streaming_mode=request.streaming_mode)
        meter.add(audio.duration_s)
    return audio


async def synthesize_stream(request: TtsRequest, user: User) -> AsyncIterator[bytes] | None:
    """`POST /api/tts` with `return_binary` in streaming mode 1-3: the WAV as the engine makes
    it (a header whose data size is 0, then PCM, as api_v2 streams it), metered as
    `synthesize` is until the stream ends. The first chunk is awaited here, so failed or
    silent speech is a 502 before anything is sent; a failure after that cuts the
    response, as api_v2 does. None: the engine does not stream."""
    engine = speech_engine()
    if not (request.streaming_mode and isinstance(engine, StreamingSpeechEngine)):
        return None
    voice = voice_by_id(request.voice_id)
    checked_text(request.text)
    held = contextlib.AsyncExitStack()
    meter = await held.enter_async_context(metered(user))
    chunks = engine.stream_pcm(request.text, voice, speed=request.speed,
                               language=request.language, streaming_mode=request.streaming_mode)
    try:
        first = await anext(chunks)
    except BaseException:
        await chunks.aclose()
        await held.aclose()
        raise
    return _streamed_wav(first, chunks, meter, held)


async def _streamed_wav(first: PcmChunk, chunks: AsyncGenerator[PcmChunk, None], meter: Meter,
                        held: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
    async with held, contextlib.aclosing(chunks):
        meter.add(_seconds(first))
        yield streaming_wav_header(first.format) + first.pcm
        async for chunk in chunks:
            meter.add(_seconds(chunk))
            yield chunk.pcm


def _seconds(chunk: PcmChunk) -> float:
    return len(chunk.pcm) / (chunk.format.sample_rate * chunk.format.block_align)


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
                streaming_mode: int = 0, speaker: User | None = None) -> TtsResult:
    """`say`, stored: what chat hands its client as `audio_url`. `speaker`: whose speech
    it is; it holds one of their places while it is made."""
    async with place_of(speaker):
        audio = await say(text, voice, speed=speed, language=language,
                          streaming_mode=streaming_mode)
    return await store(audio, voice)


@dataclass(frozen=True)
class LiveSpeech:
    """One step of `speak_live`: the audio has begun (`result` None), or it is whole and stored."""

    file_id: str
    audio_url: str
    result: TtsResult | None = None


async def speak_live(text: str, voice: Voice, *, speed: float = 1.0, language: str | None = None,
                     streaming_mode: int = 0, file_id: str | None = None,
                     speaker: User | None = None) -> AsyncGenerator[LiveSpeech, None]:
    """`speak`, heard while it is made: a step once the first chunk is in the growing file,
    then one when the whole file is stored. Where nothing can stream (mode 0, eSpeak, S3)
    there is only the second step. Failed speech is discarded, and its URL answers 404."""
    engine, audio_store = speech_engine(), get_audio_store()
    if not (streaming_mode and isinstance(engine, StreamingSpeechEngine)
            and isinstance(audio_store, GrowingAudioStore)):
        if file_id is None:
            result = await speak(text, voice, speed=speed, language=language,
                                 streaming_mode=streaming_mode, speaker=speaker)
        else:
            result = await _fill(file_id, text, voice, speed=speed, language=language,
                                 streaming_mode=streaming_mode, speaker=speaker)
        yield LiveSpeech(result.file_id, result.audio_url, result)
        return
    file_id = file_id or await audio_store.reserve()
    url = await audio_links.signed_url(file_id)
    fmt: PcmFormat | None = None
    pcm = bytearray()
    try:
        async with place_of(speaker):
            for piece in pieces_of(text, get_settings().tts_max_chars):
                async with contextlib.aclosing(engine.stream_pcm(
                        piece, voice, speed=speed, language=language,
                        streaming_mode=streaming_mode)) as chunks:
                    async for chunk in chunks:
                        if fmt is None:
                            fmt = chunk.format
                            await audio_store.grow(file_id, streaming_wav_header(fmt))
                            await audio_store.append(file_id, chunk.pcm)
                            pcm += chunk.pcm
                            yield LiveSpeech(file_id, url)
                            continue
                        if chunk.format != fmt:
                            raise UpstreamError("the speech engine's pieces differ in format")
                        await audio_store.append(file_id, chunk.pcm)
                        pcm += chunk.pcm
        if fmt is None:
            raise UpstreamError("there was nothing to speak")
        audio = pcm_wav(bytes(pcm), fmt)
        stored = await audio_store.fill(file_id, audio.audio, audio.media_type)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await audio_store.discard(file_id)
        raise
    yield LiveSpeech(file_id, url, TtsResult(
        audio_url=stored.url, file_id=file_id, duration=round(audio.duration_s, 3),
        media_type=audio.media_type, voice_id=voice.id))


async def reserve(speaker: User | None = None) -> tuple[str, str]:
    """A file id and its signed URL, before the audio exists: the URL answers 202 until it
    does. `speaker` is kept with the reservation: the job that speaks it (`speak_into`)
    holds one of their places and counts its seconds against their quota."""
    owner = json.dumps({"id": speaker.id, "admin": speaker.is_admin}) if speaker else ""
    file_id = await get_audio_store().reserve(owner)
    return file_id, await audio_links.signed_url(file_id)


def _speaker_of(owner: str | None) -> User | None:
    try:
        fields = json.loads(owner) if owner else None
    except ValueError:
        return None
    if not (isinstance(fields, dict) and isinstance(fields.get("id"), str)):
        return None
    return User(id=fields["id"], authenticated=False, is_admin=fields.get("admin") is True)


async def speak_into(job: SpeechJob) -> Literal["ready", "failed"]:
    """Fills a reserved file for whom it was reserved; on failure the reservation goes, so
    its URL answers 404."""
    speaker = _speaker_of(await get_audio_store().owner(job.file_id))
    seconds = 0.0
    try:
        async with contextlib.aclosing(speak_live(
                job.text, voice_by_id(job.voice_id), speed=job.speed, language=job.language,
                streaming_mode=job.streaming_mode, file_id=job.file_id,
                speaker=speaker)) as steps:
            async for step in steps:
                seconds = step.result.duration if step.result else seconds
    except ApiError:
        return "failed"
    if speaker is not None:
        await quotas.add_speech(speaker, seconds)
    return "ready"


async def _fill(file_id: str, text: str, voice: Voice, *, speed: float, language: str | None,
                streaming_mode: int, speaker: User | None) -> TtsResult:
    """`speak` into a reserved file; on failure the reservation goes."""
    audio_store = get_audio_store()
    try:
        async with place_of(speaker):
            audio = await say(text, voice, speed=speed, language=language,
                              streaming_mode=streaming_mode)
        stored = await audio_store.fill(file_id, audio.audio, audio.media_type)
    except ApiError:
        await audio_store.discard(file_id)
        raise
    return TtsResult(audio_url=stored.url, file_id=file_id, duration=round(audio.duration_s, 3),
                     media_type=audio.media_type, voice_id=voice.id)


@dataclass(frozen=True)
class AudioFile:
    status: Literal["ready", "pending", "growing"]
    data: bytes | None = None
    media_type: str | None = None
    redirect_to: str | None = None
    stream: AsyncIterator[bytes] | None = None
    """A growing WAV (data size 0 in its header), byte by byte as it is spoken."""


async def audio_file(file_id: str, *, expires: str | None, sig: str | None) -> AudioFile:
    """Stored audio through a link this server signed (`audio_links`): its bytes (local),
    where to fetch it (S3), the bytes of a file still being spoken, or that it is coming.
    Without a good signature it is 404, as if there were no such audio."""
    if not await audio_links.verified(file_id, expires, sig):
        raise NotFound(NO_AUDIO, code="audio_not_found")
    audio_store = get_audio_store()
    status = await audio_store.status(file_id)
    if status == "growing" and isinstance(audio_store, GrowingAudioStore):
        stream = await audio_store.follow(file_id)
        if stream is not None:
            return AudioFile("growing", media_type=WAV_MEDIA_TYPE, stream=stream)
        status = await audio_store.status(file_id)  # it finished (or failed) just now
    if status == "pending":
        return AudioFile("pending")
    if status == "ready":
        if audio_store.redirects:
            return AudioFile("ready", redirect_to=await audio_store.url(file_id))
        found = await audio_store.get(file_id)
        if found is not None:
            return AudioFile("ready", data=found[0], media_type=found[1])
    raise NotFound(NO_AUDIO, code="audio_not_found")

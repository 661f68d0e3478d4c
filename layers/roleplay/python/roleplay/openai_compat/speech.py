"""`POST /v1/audio/speech`: OpenAI's speech request, spoken by our engine.

`voice` is one of our voice ids, or a character (`<id>` or `character/<id>`) whose
voice is used. We make WAV, so `wav` (also when `response_format` is omitted) and
`pcm` (OpenAI's: raw 16-bit little-endian mono at 24 kHz, resampled here) are
answered; mp3, opus, aac and flac are a 400 rather than mislabelled bytes. It is
metered as `/api/tts` is (`speech.allowance`): a speech request against the user's
quotas, one of their places among the syntheses they run at once, its seconds counted.
"""

from __future__ import annotations

import io
import re
import sys
import wave
from array import array
from dataclasses import dataclass

from roleplay.characters.model import ID_PATTERN
from roleplay.characters.store import get_character_store
from roleplay.core.errors import BadRequest, NotFound, UpstreamError
from roleplay.core.identity import User
from roleplay.openai_compat.chat_completions import CHARACTER_PREFIX
from roleplay.openai_compat.models import SpeechRequest
from roleplay.sessions.concurrent_user_limiter import ConcurrentUserLimiter, occupant_id
from roleplay.speech import tts_service
from roleplay.speech.allowance import metered
from roleplay.speech.voice_catalog import Voice, voice_by_id, voice_for_character

limiter = ConcurrentUserLimiter()
PCM_RATE = 24000
FORMATS = ("wav", "pcm")


@dataclass(frozen=True)
class SpeechAnswer:
    audio: bytes
    media_type: str
    sample_rate: int


async def voice_named(name: str) -> Voice:
    """Our voice with this id, else the voice of the character with this id."""
    character_id = name.removeprefix(CHARACTER_PREFIX)
    if name == character_id:
        try:
            return voice_by_id(name)
        except NotFound:
            pass
    if re.match(ID_PATTERN, character_id):
        character = await get_character_store().get(character_id)
        if character is not None:
            return voice_for_character(character.voice_id)
    raise NotFound(f"no voice or character with id {name!r}; GET /api/tts/voices lists the "
                   "voices, GET /v1/models the characters", code="voice_not_found")


def _format_of(request: SpeechRequest) -> str:
    wanted = (request.response_format or "wav").lower()
    if wanted not in FORMATS:
        raise BadRequest(f"response_format {request.response_format!r} is not one we can make; "
                         f"use one of {', '.join(FORMATS)}", code="unsupported_response_format")
    return wanted


async def speak(request: SpeechRequest, user: User, client: str) -> SpeechAnswer:
    """Counted under the user cap and metered as `/api/tts` is."""
    wanted = _format_of(request)
    await limiter.ensure_admitted(occupant_id(user, f"openai-speech-{client}"))
    voice = await voice_named(request.voice)
    async with metered(user) as meter:
        audio = await tts_service.say(request.input, voice, speed=request.speed)
        meter.add(audio.duration_s)
    if wanted == "wav":
        return SpeechAnswer(audio.audio, "audio/wav", audio.sample_rate)
    return SpeechAnswer(pcm_24k(audio.audio), "audio/pcm", PCM_RATE)


def pcm_24k(wav_bytes: bytes) -> bytes:
    """A 16-bit WAV's samples as mono 24 kHz little-endian PCM (linear interpolation)."""
    try:
        with wave.open(io.BytesIO(wav_bytes)) as reader:
            channels, width, rate = (reader.getnchannels(), reader.getsampwidth(),
                                     reader.getframerate())
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as error:
        raise UpstreamError(f"the speech engine's WAV is unreadable: {error}") from None
    if width != 2:
        raise UpstreamError(f"the speech engine made {8 * width}-bit audio; pcm needs 16-bit")
    samples = array("h", frames)
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        samples = array("h", (sum(samples[i:i + channels]) // channels
                              for i in range(0, len(samples), channels)))
    if rate != PCM_RATE and len(samples) > 1:
        count = max(1, len(samples) * PCM_RATE // rate)
        step = (len(samples) - 1) / max(1, count - 1)
        out = array("h", bytes(2 * count))
        for n in range(count):
            position = n * step
            i = int(position)
            after = samples[min(i + 1, len(samples) - 1)]
            out[n] = int(samples[i] + (after - samples[i]) * (position - i))
        samples = out
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()

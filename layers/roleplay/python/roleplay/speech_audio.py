"""Speech as bytes, whatever engine made it: the synthesized-audio type, the engine
protocol, and WAV plumbing (headers, PCM, the streamed form with an unknown data size).

The lowest module of speech: engines, the engine choice (`speech`) and the services
import it, and it imports none of them.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Protocol

from roleplay.errors import BadRequest, PayloadTooLarge
from roleplay.settings import Settings, get_settings
from roleplay.voice_catalog import Voice

WAV_MEDIA_TYPE = "audio/wav"


@dataclass(frozen=True)
class SynthesizedAudio:
    audio: bytes
    media_type: str
    duration_s: float
    sample_rate: int


class SpeechEngine(Protocol):
    service: str

    async def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        language: str | None = None,
        streaming_mode: int = 0,
    ) -> SynthesizedAudio: ...


@dataclass(frozen=True)
class WavInfo:
    channels: int
    sample_width: int
    sample_rate: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def wav_info(data: bytes) -> WavInfo:
    """The RIFF header's facts; ValueError when `data` is not PCM WAV."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            info = WavInfo(reader.getnchannels(), reader.getsampwidth(), reader.getframerate(),
                           reader.getnframes())
    except (wave.Error, EOFError) as error:
        raise ValueError(f"not a PCM WAV file: {error}") from None
    if info.sample_rate <= 0:
        raise ValueError("not a PCM WAV file: sample rate 0")
    return info


def wav_duration(data: bytes) -> float:
    """Seconds of audio, from the header's frame count and sample rate."""
    return wav_info(data).duration_s


def pcm_to_wav(pcm: bytes, sample_rate: int, *, channels: int = 1, sample_width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(sample_width)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


def joined_wav(parts: list[SynthesizedAudio]) -> SynthesizedAudio:
    """One WAV from several with the same format, back to back (a long reply said in pieces)."""
    if len(parts) == 1:
        return parts[0]
    infos = [wav_info(part.audio) for part in parts]
    first = infos[0]
    if any((i.channels, i.sample_width, i.sample_rate) != (first.channels, first.sample_width,
                                                            first.sample_rate) for i in infos):
        raise ValueError("the pieces differ in format")
    pcm = bytearray()
    for part in parts:
        with wave.open(io.BytesIO(part.audio), "rb") as reader:
            pcm += reader.readframes(reader.getnframes())
    return wav_audio(pcm_to_wav(bytes(pcm), first.sample_rate, channels=first.channels,
                                sample_width=first.sample_width))


def wav_audio(data: bytes) -> SynthesizedAudio:
    info = wav_info(data)
    return SynthesizedAudio(data, WAV_MEDIA_TYPE, info.duration_s, info.sample_rate)


def checked_text(text: str, settings: Settings | None = None) -> str:
    """The text to speak, stripped; refuses empty text and text over `TTS_MAX_CHARS`."""
    limit = (settings or get_settings()).tts_max_chars
    stripped = text.strip()
    if not stripped:
        raise BadRequest("there is no text to speak", code="empty_text")
    if len(stripped) > limit:
        raise PayloadTooLarge(f"text has {len(stripped)} characters; at most {limit} can be spoken "
                              "at once (TTS_MAX_CHARS)", code="text_too_long")
    return stripped

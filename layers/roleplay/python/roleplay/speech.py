"""Text to speech, whatever engine speaks: the types the handlers see and the engine choice.

`TTS_SERVICE` picks the engine; unset, GPT-SoVITS on Server A when `TTS_BASE_URL` is
set, else the embedded eSpeak NG, so a deployment without a GPU still speaks. Every
engine answers a whole WAV file, so duration and sample rate are always known.
"""

from __future__ import annotations

import io
import unicodedata
import wave
from dataclasses import dataclass
from typing import Protocol

from roleplay.errors import BadRequest, NotConfigured, PayloadTooLarge
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


def _without_controls(text: str) -> str:
    """Control characters (NUL, escapes, ...) read as spaces: a C engine would stop at a NUL."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _has_speech(text: str) -> bool:
    """Whether any character can be said: a letter, a digit or a symbol (not only
    punctuation, spaces or invisible format characters)."""
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


def checked_text(text: str, settings: Settings | None = None) -> str:
    """The text to speak, control characters blanked and stripped; refuses text with
    nothing to say (400 `empty_text`) and text over `TTS_MAX_CHARS`."""
    limit = (settings or get_settings()).tts_max_chars
    stripped = _without_controls(text).strip()
    if not _has_speech(stripped):
        raise BadRequest("there is no text to speak", code="empty_text")
    if len(stripped) > limit:
        raise PayloadTooLarge(f"text has {len(stripped)} characters; at most {limit} can be spoken "
                              "at once (TTS_MAX_CHARS)", code="text_too_long")
    return stripped


def speech_engine(settings: Settings | None = None) -> SpeechEngine:
    settings = settings or get_settings()
    service = settings.tts_service or ("gpt_sovits" if settings.tts_base_url else "espeak")
    if service == "espeak":
        from roleplay.espeak_engine import EspeakEngine

        return EspeakEngine()
    if service == "gpt_sovits" and settings.tts_base_url:
        from roleplay.gpt_sovits_client import GptSovitsEngine

        return GptSovitsEngine(settings.tts_base_url)
    raise NotConfigured("TTS_SERVICE=gpt_sovits needs TTS_BASE_URL (GPT-SoVITS api_v2, port 9880)")

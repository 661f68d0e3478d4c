"""Speech as bytes, whatever engine made it: the synthesized-audio type, the engine
protocol, and WAV plumbing (headers, PCM, the streamed form with an unknown data size).

The lowest module of speech: engines, the engine choice (`speech`) and the services
import it, and it imports none of them.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import wave
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from roleplay.core.errors import BadRequest, PayloadTooLarge
from roleplay.core.settings import Settings, get_settings
from roleplay.speech.voice_catalog import Voice

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


@runtime_checkable
class StreamingSpeechEngine(SpeechEngine, Protocol):
    """An engine that can hand over speech while it is still making it."""

    def stream_pcm(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        language: str | None = None,
        streaming_mode: int = 2,
    ) -> AsyncGenerator[PcmChunk, None]: ...


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
    """Whether any character can be said: a letter or a digit. GPT-SoVITS drops every
    piece of text without one (`TextPreprocessor.pre_seg_text`: `re.sub("\\W+", "", text)`
    empty) and answers what it answers for a failed inference, one second of silence
    (a 502 here); so punctuation, symbols (`´¥`, emoji), spaces and invisible format
    characters alone are nothing to say, on every engine alike."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


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


FAILURE_SAMPLE_RATE = 16000
"""GPT-SoVITS's `TTS.run` answers a failed inference (and text with nothing left to say
after its preprocessing) with `np.zeros(16000)` at 16 kHz: one second of silence."""


def is_silent(pcm: bytes | bytearray) -> bool:
    """Every sample zero (or no samples at all): nothing was said."""
    return pcm.count(0) == len(pcm)


def silence_reason(audio: bytes) -> str | None:
    """Why `audio` (a whole WAV) is a failed synthesis rather than speech, or None if it is speech."""
    info = wav_info(audio)
    with wave.open(io.BytesIO(audio), "rb") as reader:
        pcm = reader.readframes(info.frames)
    if not is_silent(pcm):
        return None
    if (info.sample_rate, info.frames, info.channels) == (FAILURE_SAMPLE_RATE, FAILURE_SAMPLE_RATE, 1):
        return "one second of 16 kHz silence, which is what GPT-SoVITS answers when its inference fails"
    return "audio whose samples are all zero"


@dataclass(frozen=True)
class PcmFormat:
    sample_rate: int
    channels: int = 1
    sample_width: int = 2

    @property
    def block_align(self) -> int:
        return self.channels * self.sample_width


@dataclass(frozen=True)
class PcmChunk:
    """A piece of streamed speech: raw PCM in `format`, as it came from the engine."""

    format: PcmFormat
    pcm: bytes


def streaming_wav_header(fmt: PcmFormat) -> bytes:
    """A WAV header whose data size is 0, for audio whose length is not known yet; raw PCM
    follows. It is GPT-SoVITS's `wave_header_chunk` (api_v2.py), byte for byte."""
    return pcm_to_wav(b"", fmt.sample_rate, channels=fmt.channels, sample_width=fmt.sample_width)


def parse_wav_header(data: bytes) -> tuple[PcmFormat, int] | None:
    """The format and the length of the header that starts `data` (a WAV, possibly streamed,
    whose sizes may be 0); None while `data` is too short to tell. ValueError if not WAV."""
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("the audio does not start with a WAV header")
    offset, fmt = 12, b""
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], "little")
        if chunk_id == b"data":
            if len(fmt) < 16:
                raise ValueError("the WAV header has no fmt chunk before its data")
            _, channels, sample_rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
            if sample_rate <= 0 or bits not in (8, 16, 24, 32) or channels <= 0:
                raise ValueError("the WAV header names no usable PCM format")
            return PcmFormat(sample_rate, channels, bits // 8), offset + 8
        if offset + 8 + size > len(data):
            return None
        if chunk_id == b"fmt ":
            fmt = data[offset + 8:offset + 8 + size]
        offset += 8 + size + (size & 1)
    return None


def pcm_wav(pcm: bytes, fmt: PcmFormat) -> SynthesizedAudio:
    """Whole PCM as a WAV with its true sizes (a trailing partial frame dropped)."""
    pcm = pcm[:len(pcm) - len(pcm) % fmt.block_align]
    return wav_audio(pcm_to_wav(pcm, fmt.sample_rate, channels=fmt.channels,
                                sample_width=fmt.sample_width))

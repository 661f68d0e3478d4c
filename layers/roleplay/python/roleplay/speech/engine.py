"""Text to speech, whatever engine speaks: which engine, per settings.

`TTS_SERVICE` picks the engine; unset, GPT-SoVITS on Server A when `TTS_BASE_URL` is
set, else the embedded eSpeak NG, so a deployment without a GPU still speaks. Engines
are imported here on first use (a cold start pays only for the one it needs); they
import only `speech_audio`, never this module. The audio types are re-exported for
the callers that know them from here.
"""

from __future__ import annotations

from roleplay.core.errors import NotConfigured
from roleplay.core.settings import Settings, get_settings
from roleplay.speech.audio import (
    WAV_MEDIA_TYPE,
    SpeechEngine,
    SynthesizedAudio,
    WavInfo,
    checked_text,
    joined_wav,
    pcm_to_wav,
    wav_audio,
    wav_duration,
    wav_info,
)

__all__ = ["WAV_MEDIA_TYPE", "SpeechEngine", "SynthesizedAudio", "WavInfo", "checked_text", "joined_wav",
           "pcm_to_wav", "speech_engine", "wav_audio", "wav_duration", "wav_info"]


def speech_engine(settings: Settings | None = None) -> SpeechEngine:
    settings = settings or get_settings()
    service = settings.tts_service or ("gpt_sovits" if settings.tts_base_url else "espeak")
    if service == "espeak":
        from roleplay.speech.engines.espeak import EspeakEngine

        return EspeakEngine()
    if service == "gpt_sovits" and settings.tts_base_url:
        from roleplay.ops.failover import base_urls
        from roleplay.speech.engines.failover import FailoverSpeechEngine
        from roleplay.speech.engines.gpt_sovits import GptSovitsEngine

        urls = base_urls(settings.tts_base_url, settings.tts_base_urls)
        return FailoverSpeechEngine([GptSovitsEngine(url) for url in urls])
    raise NotConfigured("TTS_SERVICE=gpt_sovits needs TTS_BASE_URL (GPT-SoVITS api_v2, port 9880)")

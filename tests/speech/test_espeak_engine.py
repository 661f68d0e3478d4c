"""The embedded eSpeak NG engine, for real: WAV bytes that parse and actually sound."""

from __future__ import annotations

import array
import asyncio
import math
import threading
import wave
from io import BytesIO

import pytest

from roleplay.core.errors import BadRequest, PayloadTooLarge
from roleplay.speech.engine import SynthesizedAudio, speech_engine, wav_duration
from roleplay.speech.engines.espeak import EspeakEngine, espeak_rate, voice_names
from roleplay.speech.voice_catalog import Voice

KOREAN = Voice(id="default", name="기본 음성", language="ko", gender="female")
ENGLISH = Voice(id="en-male", name="Ed", language="en", gender="male")


def _speak(text: str, voice: Voice, **options: object) -> SynthesizedAudio:
    return asyncio.run(EspeakEngine().synthesize(text, voice, **options))  # type: ignore[arg-type]


def _samples(audio: SynthesizedAudio) -> array.array[int]:
    with wave.open(BytesIO(audio.audio)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        samples = array.array("h", reader.readframes(reader.getnframes()))
    assert len(samples) == reader.getnframes()
    return samples


def _rms(samples: array.array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def test_korean_text_is_real_speech() -> None:
    audio = _speak("안녕하세요, 만나서 반가워요.", KOREAN)
    assert audio.media_type == "audio/wav"
    assert audio.audio[:4] == b"RIFF" and audio.audio[8:12] == b"WAVE"
    samples = _samples(audio)
    assert audio.sample_rate == 22050
    assert audio.duration_s == pytest.approx(len(samples) / audio.sample_rate)
    assert wav_duration(audio.audio) == audio.duration_s
    assert 1.0 < audio.duration_s < 6.0
    assert _rms(samples) > 500, "not silence"


def test_english_text_is_real_speech_and_longer_text_lasts_longer() -> None:
    short = _speak("Hello.", ENGLISH)
    long = _speak("Hello there, it is really nice to meet you at last.", ENGLISH)
    assert _rms(_samples(long)) > 500
    assert long.duration_s > short.duration_s * 2
    assert wav_duration(long.audio) == pytest.approx(len(_samples(long)) / long.sample_rate)


def test_speed_changes_the_duration() -> None:
    text = "This sentence is spoken at two different speeds."
    normal, fast = _speak(text, ENGLISH), _speak(text, ENGLISH, speed=2.0)
    assert fast.duration_s < normal.duration_s * 0.75


def test_the_language_argument_overrides_the_voice() -> None:
    english = _speak("Good morning", KOREAN, language="en-US")
    assert _rms(_samples(english)) > 500


def test_threads_at_once_all_get_their_own_audio() -> None:
    texts = ["one", "two two two two", "하나 둘 셋 넷 다섯 여섯", "Hello everybody, how are you all today?"]
    alone = {text: _speak(text, ENGLISH).duration_s for text in texts}
    results: list[tuple[str, SynthesizedAudio]] = []

    def run(text: str) -> None:
        results.append((text, _speak(text, ENGLISH)))

    threads = [threading.Thread(target=run, args=(text,)) for text in texts for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == len(threads)
    for text, audio in results:
        # eSpeak varies a few samples from call to call; another text's samples would not.
        assert audio.duration_s == pytest.approx(alone[text], rel=0.02), text
        assert wav_duration(audio.audio) == audio.duration_s


def test_bad_input_is_refused(settings_env) -> None:
    with pytest.raises(BadRequest):
        _speak("   ", KOREAN)
    with pytest.raises(BadRequest, match="no voice"):
        _speak("hello", Voice(id="x", name="x", language="tlh"))
    with pytest.raises(BadRequest):
        _speak("hello", ENGLISH, speed=0)
    settings_env(TTS_MAX_CHARS="10")
    with pytest.raises(PayloadTooLarge):
        _speak("eleven char", ENGLISH)


def test_voice_names_and_rate() -> None:
    assert voice_names("ko", "female") == ["ko+f3", "ko"]
    assert voice_names("en-US", None) == ["en-us", "en"]
    assert voice_names("EN_gb", "male") == ["en-gb+m3", "en-gb", "en+m3", "en"]
    assert (espeak_rate(1.0), espeak_rate(0.1), espeak_rate(9)) == (175, 80, 450)


def test_it_is_the_default_engine() -> None:
    assert isinstance(speech_engine(), EspeakEngine)

"""The embedded default voice: eSpeak NG in-process, so the app speaks without a GPU server.

The library and its data (Korean included) come from the `espeakng-loader` wheel and
are called through ctypes. libespeak-ng keeps global state and is not thread-safe, so
every call holds one lock and runs on the engine's own single worker thread, off the
event loop. Its own thread, not `asyncio.to_thread`: calls queued behind the lock would
otherwise fill the default thread pool (a handful of threads), and every other
`to_thread` of the process (the audio store's file reads, so everyone's audio
downloads) would wait behind one user's queue. It is loaded on first use, never at
import, to keep a Lambda cold start cheap.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from roleplay.core.errors import BadRequest, NotConfigured
from roleplay.speech.audio import SynthesizedAudio, checked_text, pcm_to_wav
from roleplay.speech.voice_catalog import Voice

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE = 1
_EE_OK = 0

DEFAULT_RATE = 175  # words per minute, eSpeak's own default
MIN_RATE, MAX_RATE = 80, 450
_VARIANTS = {"female": "f3", "male": "m3"}

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The loaded library; one per process, used only under `_lock`."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise NotConfigured("eSpeak NG is not installed (pip install espeakng-loader)") from None
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as error:
            raise NotConfigured(f"eSpeak NG could not be loaded: {error}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synchronize.argtypes = []
        for function in ("espeak_SetVoiceByName", "espeak_SetParameter", "espeak_Synth",
                         "espeak_Synchronize"):
            getattr(lib, function).restype = ctypes.c_int
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                                            _INITIALIZE_DONT_EXIT)
        if sample_rate <= 0:
            raise NotConfigured(f"eSpeak NG failed to initialise (code {sample_rate}) with {data_path}")
        self._lib = lib
        self.sample_rate = sample_rate
        self._chunks: list[bytes] = []
        # Kept on the instance: ctypes would free a callback the library still points at.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if samples and count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0: go on synthesizing

    def set_voice(self, names: list[str]) -> str:
        for name in names:
            if self._lib.espeak_SetVoiceByName(name.encode()) == _EE_OK:
                return name
        raise BadRequest(f"eSpeak NG has no voice for {names[-1]!r}", code="unsupported_language")

    def synthesize(self, text: str, voice_names: list[str], rate: int) -> bytes:
        """16-bit mono PCM at `sample_rate`."""
        self.set_voice(voice_names)
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        encoded = text.encode("utf-8") + b"\0"
        self._chunks = []
        try:
            code = self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                          None, None)
            if code == _EE_OK:
                code = self._lib.espeak_Synchronize()
            if code != _EE_OK:
                raise NotConfigured(f"eSpeak NG failed to synthesize (code {code})")
            return b"".join(self._chunks)
        finally:
            self._chunks = []


_lock = threading.Lock()
_runtime: _Espeak | None = None
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")


def _speak(text: str, voice_names: list[str], rate: int) -> tuple[bytes, int]:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _Espeak()
        return _runtime.synthesize(text, voice_names, rate), _runtime.sample_rate


def voice_names(language: str, gender: str | None = None) -> list[str]:
    """eSpeak voice names to try, best first: `ko-kr+f3`, `ko-kr`, `ko+f3`, `ko`."""
    full = language.strip().lower().replace("_", "-")
    languages = [full] if "-" not in full else [full, full.split("-", 1)[0]]
    variant = _VARIANTS.get((gender or "").lower())
    names: list[str] = []
    for name in languages:
        if variant:
            names.append(f"{name}+{variant}")
        names.append(name)
    return names


def espeak_rate(speed: float) -> int:
    if not speed > 0:
        raise BadRequest("speed must be above 0", code="invalid_speed")
    return max(MIN_RATE, min(MAX_RATE, round(DEFAULT_RATE * speed)))


class EspeakEngine:
    """eSpeak NG; `streaming_mode` is accepted and ignored, since it speaks faster than real time."""

    service = "espeak"

    async def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        language: str | None = None,
        streaming_mode: int = 0,
    ) -> SynthesizedAudio:
        text = checked_text(text)
        names = voice_names(language or voice.language, voice.gender)
        pcm, sample_rate = await asyncio.get_running_loop().run_in_executor(
            _executor, functools.partial(_speak, text, names, espeak_rate(speed)))
        frames = len(pcm) // 2
        return SynthesizedAudio(pcm_to_wav(pcm, sample_rate), "audio/wav", frames / sample_rate,
                                sample_rate)

"""GPT-SoVITS on Server A, through its `api_v2.py` server (port 9880 by default).

The contract followed here is upstream's `api_v2.py` (RVC-Boss/GPT-SoVITS): `POST /tts`
with a JSON body answers audio, or 400 with `{"message": ..., "Exception": ...}`;
`GET /set_gpt_weights` and `GET /set_sovits_weights` take `weights_path` and answer
`{"message": "success"}`; `GET /control?command=restart|exit`. With `streaming_mode`
1-3 and `media_type=wav` it streams one WAV header whose data size is 0, then raw PCM.
(The web UI on ports 9871-9874 is not this API.)

The server holds ONE GPT/SoVITS weight pair at a time, so a weight switch and the
synthesis that needs it must not interleave with another voice's, across processes:
both run under one Redis lock, and the pair last loaded is kept in Redis so an
unchanged pair skips the switch. Failures map like the LLM's: unreachable → 502,
too slow → 504, an error answer → 502 with upstream's message; a busy engine → 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from roleplay.errors import (
    BadRequest,
    NotConfigured,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from roleplay.http_pool import pooled_http
from roleplay.llm_client import upstream_call, upstream_message
from roleplay.redis_client import get_redis
from roleplay.redis_keys import redis_keys
from roleplay.settings import get_settings
from roleplay.speech_audio import SynthesizedAudio, checked_text, pcm_to_wav, wav_audio
from roleplay.voice_catalog import Voice

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9880
STREAMING_MODES = (0, 1, 2, 3)  # 0 off | 1 best quality, slowest | 2 medium | 3 fastest
MEDIA_TYPES = ("wav", "raw", "ogg", "aac")
LOCK_LEASE_S = 30.0  # renewed while held; frees the engine soon after a holder dies
LOADED_TTL_S = 600  # re-switch now and then, in case the server restarted on its defaults


@dataclass(frozen=True)
class SovitsParams:
    """The sampling knobs of `POST /tts`, at api_v2's own defaults (`TTS_Request`)."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    text_split_method: str = "cut5"
    batch_size: int = 1
    batch_threshold: float = 0.75
    split_bucket: bool = True
    fragment_interval: float = 0.3
    seed: int = -1
    parallel_infer: bool = True
    repetition_penalty: float = 1.35
    sample_steps: int = 32
    super_sampling: bool = False
    overlap_length: int = 2
    min_chunk_length: int = 16


tts_http_holder = pooled_http(lambda s: (s.tts_connect_timeout_s, s.tts_read_timeout_s),
                              max_connections=50, keepalive=10)


def engine_lock_key() -> str:
    return f"{redis_keys().prefix}tts:engine-lock"


def loaded_weights_key() -> str:
    return f"{redis_keys().prefix}tts:engine-weights"


def sovits_message(body: bytes, fallback: str) -> str:
    """api_v2's error text: its `message`, plus the `Exception` it caught, if any."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        message = str(payload["message"])
        if payload.get("Exception"):
            message = f"{message}: {payload['Exception']}"
        return message[:500]
    return upstream_message(body, fallback)


def _lang(code: str) -> str:
    """api_v2 wants its own lower-case codes (`ko`, `all_ko`, `en`...); `ko-KR` becomes `ko`."""
    return code.strip().lower().split("-", 1)[0]


def complete_streamed_wav(data: bytes) -> bytes:
    """A whole WAV file from api_v2's stream: a header whose data size is 0, then raw PCM."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("the stream does not start with a WAV header")
    offset, fmt = 12, b""
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], "little")
        if chunk_id == b"data":
            break
        if chunk_id == b"fmt ":
            fmt = data[offset + 8:offset + 8 + size]
        offset += 8 + size + (size & 1)
    else:
        raise ValueError("the stream has no WAV data chunk")
    if len(fmt) < 16:
        raise ValueError("the stream has no WAV fmt chunk")
    _, channels, sample_rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    pcm = data[offset + 8:]
    pcm = pcm[:len(pcm) - len(pcm) % max(block_align, 1)]
    return pcm_to_wav(pcm, sample_rate, channels=channels, sample_width=bits // 8)


async def _keep_lock(lock: Lock) -> None:
    while True:
        await asyncio.sleep(LOCK_LEASE_S / 3)
        try:
            await lock.reacquire()
        except (LockError, RedisError) as error:
            logger.warning("could not extend the TTS engine lock: %s", error)
            return


@asynccontextmanager
async def engine_lock() -> AsyncIterator[None]:
    """Holds the engine for one switch-and-synthesize, across every process on this Redis."""
    redis = await get_redis()
    wait = get_settings().tts_lock_timeout_s
    lock = redis.lock(engine_lock_key(), timeout=LOCK_LEASE_S, sleep=0.02, blocking_timeout=wait)
    if not await lock.acquire():
        raise ServiceUnavailable(
            f"the speech engine stayed busy for {wait:g} s (TTS_LOCK_TIMEOUT_S); try again shortly",
            code="tts_busy", headers={"Retry-After": "5"})
    keeper = asyncio.create_task(_keep_lock(lock))
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        try:
            await lock.release()
        except LockError:
            logger.warning("the TTS engine lock expired while held")


class GptSovitsEngine:
    service = "gpt_sovits"
    name = "TTS upstream (GPT-SoVITS)"

    def __init__(self, base_url: str, params: SovitsParams | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.params = params or SovitsParams()

    def payload(self, text: str, voice: Voice, *, speed: float = 1.0, language: str | None = None,
                streaming_mode: int = 0, media_type: str = "wav") -> dict[str, Any]:
        """The `POST /tts` body; refuses what api_v2 would refuse for a reason of ours."""
        if not voice.ref_audio_path:
            raise NotConfigured(f"voice {voice.id!r} has no ref_audio_path, which GPT-SoVITS needs")
        if not speed > 0:
            raise BadRequest("speed must be above 0", code="invalid_speed")
        if streaming_mode not in STREAMING_MODES:
            raise BadRequest("streaming_mode must be 0, 1, 2 or 3", code="invalid_streaming_mode")
        if media_type not in MEDIA_TYPES:
            raise BadRequest(f"media_type must be one of {', '.join(MEDIA_TYPES)}")
        return {
            "text": text,
            "text_lang": _lang(language or voice.language),
            "ref_audio_path": voice.ref_audio_path,
            "aux_ref_audio_paths": [],
            "prompt_text": voice.prompt_text or "",
            "prompt_lang": _lang(voice.prompt_lang or voice.language),
            "speed_factor": speed,
            "media_type": media_type,
            "streaming_mode": streaming_mode,
            **asdict(self.params),
        }

    async def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        language: str | None = None,
        streaming_mode: int = 0,
    ) -> SynthesizedAudio:
        """A whole WAV; with `streaming_mode` 1-3 it is gathered from upstream's stream."""
        if streaming_mode:
            chunks = [chunk async for chunk in self.synthesize_stream(
                text, voice, speed=speed, language=language, streaming_mode=streaming_mode)]
            return self._wav(b"".join(chunks), streamed=True)
        payload = self.payload(checked_text(text), voice, speed=speed, language=language)
        async with self._engine(voice) as http, upstream_call(self.name):
            response = await http.post(f"{self.base_url}/tts", json=payload)
            await self._raise_for_status(response)
        return self._wav(response.content, streamed=False)

    async def synthesize_stream(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        language: str | None = None,
        streaming_mode: int = 2,
        media_type: Literal["wav", "raw", "ogg", "aac"] = "wav",
    ) -> AsyncIterator[bytes]:
        """Audio as upstream sends it; for wav, a header with data size 0, then raw PCM."""
        if streaming_mode == 0:
            raise BadRequest("streaming needs streaming_mode 1, 2 or 3", code="invalid_streaming_mode")
        payload = self.payload(checked_text(text), voice, speed=speed, language=language,
                               streaming_mode=streaming_mode, media_type=media_type)
        async with self._engine(voice) as http, upstream_call(self.name), http.stream(
            "POST", f"{self.base_url}/tts", json=payload
        ) as response:
            await self._raise_for_status(response)
            async for chunk in response.aiter_bytes():
                if chunk:
                    yield chunk

    async def set_gpt_weights(self, weights_path: str) -> None:
        await self._get("/set_gpt_weights", {"weights_path": weights_path})

    async def set_sovits_weights(self, weights_path: str) -> None:
        await self._get("/set_sovits_weights", {"weights_path": weights_path})

    async def control(self, command: Literal["restart", "exit"]) -> None:
        """Restarts or stops the server; the weights it loads then are its config's defaults."""
        async with engine_lock():
            await (await get_redis()).delete(loaded_weights_key())
            with contextlib.suppress(UpstreamUnavailable):  # it goes before answering
                await self._get("/control", {"command": command})

    @asynccontextmanager
    async def _engine(self, voice: Voice) -> AsyncIterator[httpx.AsyncClient]:
        """The engine, locked, with `voice`'s weights loaded, for one synthesis."""
        async with engine_lock():
            http = await tts_http_holder.get()
            try:
                await self._load_weights(voice)
                yield http
            except (UpstreamUnavailable, UpstreamTimeout):
                # It may have restarted on its default weights: trust no record of ours.
                await (await get_redis()).delete(loaded_weights_key())
                raise

    async def _load_weights(self, voice: Voice) -> None:
        """Switches only what differs from the pair last loaded; a voice without weights
        speaks with whatever pair is loaded."""
        if not (voice.gpt_weights or voice.sovits_weights):
            return
        redis, key = await get_redis(), loaded_weights_key()
        raw = await redis.get(key)
        loaded: dict[str, str] = json.loads(raw) if raw else {}
        wanted = {"gpt": voice.gpt_weights, "sovits": voice.sovits_weights}
        stale = {part: path for part, path in wanted.items() if path and loaded.get(part) != path}
        if not stale:
            return
        await redis.delete(key)  # a switch that fails halfway leaves no record to trust
        if "gpt" in stale:
            await self.set_gpt_weights(stale["gpt"])
        if "sovits" in stale:
            await self.set_sovits_weights(stale["sovits"])
        await redis.set(key, json.dumps(loaded | stale), ex=LOADED_TTL_S)

    async def _get(self, path: str, params: dict[str, str]) -> None:
        http = await tts_http_holder.get()
        async with upstream_call(self.name):
            response = await http.get(f"{self.base_url}{path}", params=params)
            await self._raise_for_status(response)

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        body = await response.aread()
        message = sovits_message(body, f"HTTP {response.status_code}")
        raise UpstreamError(f"{self.name} answered {response.status_code}: {message}",
                            details={"upstream_status": response.status_code})

    def _wav(self, body: bytes, *, streamed: bool) -> SynthesizedAudio:
        try:
            return wav_audio(complete_streamed_wav(body) if streamed else body)
        except ValueError as error:
            raise UpstreamError(f"{self.name} answered with audio that is not WAV: {error}") from None

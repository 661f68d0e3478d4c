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
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from roleplay.core.errors import (
    BadRequest,
    NotConfigured,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from roleplay.core.http_pool import pooled_http
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.gpu.coordinator import gpu_lease
from roleplay.llm.wire import upstream_call, upstream_message
from roleplay.speech.audio import (
    FAILURE_SAMPLE_RATE,
    PcmChunk,
    PcmFormat,
    SynthesizedAudio,
    checked_text,
    is_silent,
    parse_wav_header,
    pcm_wav,
    silence_reason,
    wav_audio,
)
from roleplay.speech.voice_catalog import Voice

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
    return redis_keys().tts_engine_lock


def loaded_weights_key() -> str:
    return redis_keys().tts_engine_weights


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
    parsed = parse_wav_header(data)
    if parsed is None:
        raise ValueError("the stream has no complete WAV header")
    fmt, start = parsed
    return pcm_wav(data[start:], fmt).audio


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
        """A whole WAV; with `streaming_mode` 1-3 it is gathered from upstream's stream.
        Silence is an error (see `silence_reason`), never audio to store."""
        if streaming_mode:
            if streaming_mode not in STREAMING_MODES:
                raise BadRequest("streaming_mode must be 0, 1, 2 or 3", code="invalid_streaming_mode")
            fmt: PcmFormat | None = None
            pcm = bytearray()
            async for chunk in self.stream_pcm(text, voice, speed=speed, language=language,
                                               streaming_mode=streaming_mode):
                fmt = chunk.format
                pcm += chunk.pcm
            assert fmt is not None  # stream_pcm yields at least one chunk or raises
            return pcm_wav(bytes(pcm), fmt)
        payload = self.payload(checked_text(text), voice, speed=speed, language=language)
        async with self._engine(voice) as http, upstream_call(self.name):
            response = await http.post(f"{self.base_url}/tts", json=payload)
            await self._raise_for_status(response)
        return self._wav(response.content)

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
            try:
                async for chunk in response.aiter_bytes():
                    if chunk:
                        yield chunk
            except httpx.RemoteProtocolError:
                raise UpstreamError(f"{self.name} cut its audio stream short, as api_v2 does when "
                                    "inference fails mid-stream") from None

    async def stream_pcm(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        language: str | None = None,
        streaming_mode: int = 2,
    ) -> AsyncGenerator[PcmChunk, None]:
        """Speech as upstream makes it, chunk by chunk, checked as it goes.

        A failed inference inside `TTS.run` yields one second of 16 kHz zeros before it
        re-raises; in a stream api_v2 sends those zeros (after a 16 kHz header if they come
        first) and then drops the connection. So leading silence is held back until a
        sample is not zero: a failure is an error before anyone hears a thing, a stream cut
        later is an error, and a stream that ends silent (or empty: api_v2 streams nothing
        when no text is left after its preprocessing) is one too.
        """
        head = b""
        fmt: PcmFormat | None = None
        held: bytearray | None = bytearray()
        async for data in self.synthesize_stream(text, voice, speed=speed, language=language,
                                                 streaming_mode=streaming_mode):
            if fmt is None:
                head += data
                try:
                    parsed = parse_wav_header(head)
                except ValueError as error:
                    raise UpstreamError(f"{self.name} streamed audio that is not WAV: {error}") from None
                if parsed is None:
                    continue
                fmt, start = parsed
                data, head = head[start:], b""
            if held is not None:
                held += data
                if is_silent(held):
                    continue
                data, held = bytes(held), None
            if data:
                yield PcmChunk(fmt, data)
        if fmt is None:
            raise UpstreamError(f"{self.name} streamed no audio: nothing was left to say after its "
                                "text preprocessing")
        if held is not None:
            reason = ("one second of 16 kHz silence, which is what GPT-SoVITS answers when its "
                      "inference fails" if fmt.sample_rate == FAILURE_SAMPLE_RATE
                      else "only silence")
            raise UpstreamError(f"{self.name} streamed {reason}")

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
        async with gpu_lease("tts"), engine_lock():
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

    def _wav(self, body: bytes) -> SynthesizedAudio:
        try:
            audio = wav_audio(body)
            reason = silence_reason(body)
        except ValueError as error:
            raise UpstreamError(f"{self.name} answered with audio that is not WAV: {error}") from None
        if reason:
            raise UpstreamError(f"{self.name} answered {reason}")
        return audio

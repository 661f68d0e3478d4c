"""GPT-SoVITS behind `ops.failover`: `TTS_BASE_URLS` tried in order, one retry before the
first byte, a circuit breaker per server. Streamed speech fails over only until its first
chunk has arrived; after that a failure is the stream's own error."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from roleplay.ops.failover import with_failover
from roleplay.speech.audio import PcmChunk, SynthesizedAudio
from roleplay.speech.engines.gpt_sovits import GptSovitsEngine
from roleplay.speech.voice_catalog import Voice


class FailoverSpeechEngine:
    service = "gpt_sovits"

    def __init__(self, engines: list[GptSovitsEngine]) -> None:
        self.engines = {engine.base_url: engine for engine in engines}
        self.name = engines[0].name

    async def synthesize(self, text: str, voice: Voice, *, speed: float = 1.0,
                         language: str | None = None, streaming_mode: int = 0) -> SynthesizedAudio:
        return await with_failover(self.name, list(self.engines), lambda url: self.engines[url].synthesize(
            text, voice, speed=speed, language=language, streaming_mode=streaming_mode))

    async def stream_pcm(self, text: str, voice: Voice, *, speed: float = 1.0,
                         language: str | None = None, streaming_mode: int = 2,
                         ) -> AsyncGenerator[PcmChunk, None]:
        async def opened(url: str) -> tuple[AsyncGenerator[PcmChunk, None], PcmChunk]:
            chunks = self.engines[url].stream_pcm(text, voice, speed=speed, language=language,
                                                  streaming_mode=streaming_mode)
            try:
                return chunks, await anext(chunks)
            except BaseException:
                await chunks.aclose()
                raise

        chunks, first = await with_failover(self.name, list(self.engines), opened)
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

"""Speech that starts with the first sentence of a streamed reply.

As text deltas arrive, `SentenceSplitter` hands over each finished sentence; one worker
speaks them one at a time, in order (the engine holds one voice at a time anyway), and
each finished audio file becomes an event. Time to first audio is then the time to
the first sentence plus one short synthesis, not the whole reply plus all of it.
A failed sentence is an event with an error, never a failed chat.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from roleplay.errors import ApiError
from roleplay.speech_text import SentenceSplitter
from roleplay.tts_service import speak
from roleplay.voice_catalog import Voice


@dataclass(frozen=True)
class SpokenSentence:
    index: int
    text: str
    audio_url: str | None = None
    duration: float | None = None
    error_code: str | None = None
    error: str | None = None

    def event(self) -> dict[str, object]:
        if self.error_code:
            return {"index": self.index, "text": self.text,
                    "error": {"code": self.error_code, "message": self.error}}
        return {"index": self.index, "text": self.text, "audio_url": self.audio_url,
                "duration": self.duration}


class SpeechPipeline:
    def __init__(self, voice: Voice, *, streaming_mode: int = 0, strip_directions: bool = True) -> None:
        self.voice = voice
        self.streaming_mode = streaming_mode
        self._splitter = SentenceSplitter(strip_directions=strip_directions)
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._spoken: asyncio.Queue[SpokenSentence | None] = asyncio.Queue()
        self._worker = asyncio.create_task(self._speak_in_order())

    def feed(self, delta: str) -> None:
        for sentence in self._splitter.feed(delta):
            self._sentences.put_nowait(sentence)

    def finish(self) -> None:
        """The reply is complete: speak what is left, then stop."""
        for sentence in self._splitter.flush():
            self._sentences.put_nowait(sentence)
        self._sentences.put_nowait(None)

    def ready(self) -> list[SpokenSentence]:
        """Sentences spoken so far and not yet taken, without waiting."""
        taken: list[SpokenSentence] = []
        while not self._spoken.empty():
            spoken = self._spoken.get_nowait()
            if spoken is None:
                self._spoken.put_nowait(None)  # keep the end marker for `rest`
                break
            taken.append(spoken)
        return taken

    async def rest(self) -> list[SpokenSentence]:
        """After `finish`: every sentence still to come, waiting for each in turn."""
        taken: list[SpokenSentence] = []
        while (spoken := await self._spoken.get()) is not None:
            taken.append(spoken)
        return taken

    async def aclose(self) -> None:
        """Stops speaking (the client left); whatever is mid-synthesis is abandoned."""
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    async def _speak_in_order(self) -> None:
        index = 0
        while (sentence := await self._sentences.get()) is not None:
            try:
                result = await speak(sentence, self.voice, streaming_mode=self.streaming_mode)
                spoken = SpokenSentence(index, sentence, result.audio_url, result.duration)
            except ApiError as error:
                spoken = SpokenSentence(index, sentence, error_code=error.error_code,
                                        error=error.message)
            self._spoken.put_nowait(spoken)
            index += 1
        self._spoken.put_nowait(None)

"""Speech that starts with the first sentence of a streamed reply.

As text deltas arrive, `SentenceSplitter` hands over each finished sentence; one worker
speaks them one at a time, in order (the engine holds one voice at a time anyway), and
each finished audio file becomes an event. Time to first audio is then the time to
the first sentence plus one short synthesis, not the whole reply plus all of it.
A failed sentence is an event with an error, never a failed chat.

With `streaming_mode` 1-3 (and an engine and store that can stream, see
`tts_service.speak_live`), a sentence's event comes as soon as its first chunk of audio
exists, with `streaming: true` and no duration yet: its URL serves a WAV that grows
while the rest is spoken; and the first piece may end at a word boundary before its
sentence does (`SentenceSplitter`'s `first_piece_at_word`). If the synthesis then fails,
a second event for the same index carries the error (the URL then stops growing and
answers 404).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from roleplay.core.errors import ApiError
from roleplay.core.identity import User
from roleplay.speech.text import SentenceSplitter
from roleplay.speech.tts_service import speak, speak_live
from roleplay.speech.voice_catalog import Voice


@dataclass(frozen=True)
class SpokenSentence:
    index: int
    text: str
    audio_url: str | None = None
    duration: float | None = None
    error_code: str | None = None
    error: str | None = None
    streaming: bool = False

    def event(self) -> dict[str, object]:
        if self.error_code:
            return {"index": self.index, "text": self.text,
                    "error": {"code": self.error_code, "message": self.error}}
        event: dict[str, object] = {"index": self.index, "text": self.text,
                                    "audio_url": self.audio_url, "duration": self.duration}
        if self.streaming:
            event["streaming"] = True
        return event


class SpeechPipeline:
    def __init__(self, voice: Voice, *, streaming_mode: int = 0, strip_directions: bool = True,
                 speaker: User | None = None) -> None:
        """`speaker`: whose speech it is; each sentence holds one of their places while it
        is spoken (`TTS_MAX_CONCURRENT_PER_USER`)."""
        self.voice = voice
        self.streaming_mode = streaming_mode
        self.speaker = speaker
        self._splitter = SentenceSplitter(strip_directions=strip_directions,
                                          first_piece_at_word=streaming_mode > 0)
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._spoken: asyncio.Queue[SpokenSentence | None] = asyncio.Queue()
        self._has_spoken = asyncio.Event()
        self._worker = asyncio.create_task(self._speak_in_order())

    def feed(self, delta: str) -> None:
        for sentence in self._splitter.feed(delta):
            self._sentences.put_nowait(sentence)

    def finish(self) -> None:
        """The reply is complete: speak what is left, then stop."""
        for sentence in self._splitter.flush():
            self._sentences.put_nowait(sentence)
        self._sentences.put_nowait(None)

    async def wait_ready(self) -> None:
        """Returns once a sentence is ready to be taken (or the end marker is queued), so a
        relay can send it between two text deltas instead of with the next one."""
        await self._has_spoken.wait()

    def ready(self) -> list[SpokenSentence]:
        """Sentences spoken so far and not yet taken, without waiting."""
        self._has_spoken.clear()
        taken: list[SpokenSentence] = []
        while not self._spoken.empty():
            spoken = self._spoken.get_nowait()
            if spoken is None:
                self._spoken.put_nowait(None)  # keep the end marker for `rest`
                break
            taken.append(spoken)
        return taken

    async def rest(self) -> AsyncIterator[SpokenSentence]:
        """After `finish`: every sentence still to come, each as soon as it is ready."""
        while (spoken := await self._spoken.get()) is not None:
            yield spoken

    async def aclose(self) -> None:
        """Stops speaking (the client left); whatever is mid-synthesis is abandoned."""
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    def _put(self, spoken: SpokenSentence | None) -> None:
        self._spoken.put_nowait(spoken)
        self._has_spoken.set()

    async def _speak_in_order(self) -> None:
        index = 0
        while (sentence := await self._sentences.get()) is not None:
            if self.streaming_mode:
                await self._speak_live(index, sentence)
            else:
                try:
                    result = await speak(sentence, self.voice, streaming_mode=self.streaming_mode,
                                         speaker=self.speaker)
                    spoken = SpokenSentence(index, sentence, result.audio_url, result.duration)
                except ApiError as error:
                    spoken = SpokenSentence(index, sentence, error_code=error.error_code,
                                            error=error.message)
                self._put(spoken)
            index += 1
        self._put(None)

    async def _speak_live(self, index: int, sentence: str) -> None:
        """One sentence, announced at its first chunk; the next waits until it is whole."""
        announced = False
        try:
            async with contextlib.aclosing(speak_live(sentence, self.voice,
                                                      streaming_mode=self.streaming_mode,
                                                      speaker=self.speaker)) as steps:
                async for step in steps:
                    if step.result is None:
                        self._put(SpokenSentence(index, sentence, step.audio_url,
                                                               streaming=True))
                        announced = True
                    elif not announced:
                        self._put(SpokenSentence(index, sentence, step.result.audio_url,
                                                               step.result.duration))
        except ApiError as error:
            self._put(SpokenSentence(index, sentence, error_code=error.error_code,
                                                   error=error.message))

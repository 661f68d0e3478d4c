"""What one user's speech may take: a request against their quotas, one of their places
among the syntheses they run at once, and the seconds it made, counted.

A door that speaks on a user's own request (`/api/tts`, `/v1/audio/speech`) goes
through `metered` once, so nothing is checked or counted twice. A chat turn's speech is
checked with its turn (`chat.preparation`: a turn that speaks is a speech request) and
counted as each reply or sentence is spoken (`chat.turn_observer`); while it is made it
holds one of the speaker's places (`place_of`), as every synthesis of a user does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass

import anyio

from roleplay.core import request_context
from roleplay.core.identity import User
from roleplay.ops import quotas
from roleplay.speech.slots import speech_slot


@dataclass
class Meter:
    """The seconds of speech a metered block made."""

    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.seconds += max(0.0, seconds)


@asynccontextmanager
async def metered(user: User) -> AsyncIterator[Meter]:
    """One speech request of `user`: 429 `quota_exceeded` past a quota (admins are
    exempt), 429 `tts_busy` when no place frees in time; the seconds the block adds to
    its meter count against the day's speech, also when it fails half-way."""
    await quotas.check(user, "tts")
    meter = Meter()
    async with speech_slot(user.id):
        try:
            yield meter
        finally:
            with anyio.CancelScope(shield=True):
                await quotas.add_speech(user, meter.seconds)
            record = request_context.current()
            if record is not None and meter.seconds:
                record.fields["speech_s"] = round(record.fields.get("speech_s", 0) + meter.seconds, 3)


def place_of(speaker: User | None) -> AbstractAsyncContextManager[object]:
    """One of `speaker`'s places for a synthesis (none to hold when nobody is named)."""
    return speech_slot(speaker.id) if speaker is not None else nullcontext()

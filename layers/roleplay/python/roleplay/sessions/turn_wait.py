"""Waiting for a session's turn to end, as a turn does (`session_turn`): a short,
growing, jittered pause up to `TURN_WAIT_S`, then 409 `turn_in_progress`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from roleplay.core.settings import get_settings
from roleplay.sessions.store import Busy
from roleplay.sessions.turn import FIRST_PAUSE_S, LONGEST_PAUSE_S, TurnInProgress

T = TypeVar("T")


async def when_free(attempt: Callable[[], Awaitable[T | Busy]]) -> T:
    """Runs `attempt` until the session is not busy, or gives up with 409."""
    deadline = time.monotonic() + get_settings().turn_wait_s
    pause = FIRST_PAUSE_S
    while True:
        answer = await attempt()
        if not isinstance(answer, Busy):
            return answer
        left = deadline - time.monotonic()
        if left <= 0:
            raise TurnInProgress(answer.retry_after_ms / 1000)
        await asyncio.sleep(min(left, pause * (0.5 + random.random())))
        pause = min(pause * 1.5, LONGEST_PAUSE_S)

"""Beginning a turn under its session's lease: one turn at a time, across instances.

A turn that finds another one in progress on its session waits for it (polling the
begin script with a short, growing, jittered pause) up to `TURN_WAIT_S`, then answers
409 `turn_in_progress` with Retry-After. A retry of a turn still in flight waits the
same way and then finds that turn's stored reply (`Replay`), so it never generates twice,
even where a re-sent history would otherwise be a swipe.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

from roleplay.core.errors import Conflict
from roleplay.core.settings import get_settings
from roleplay.sessions.store import (
    Busy,
    Replay,
    SessionStore,
    StoredMessage,
    Swipes,
    Turn,
    TurnLimit,
    TurnSetup,
)

FIRST_PAUSE_S = 0.02
LONGEST_PAUSE_S = 0.2


class TurnInProgress(Conflict):
    code = "turn_in_progress"

    def __init__(self, lease_left_s: float) -> None:
        super().__init__(
            "another turn of this session is being answered; send this one once it is done",
            headers={"Retry-After": "1"},
            details={"retry_after_s": 1, "lease_expires_in_s": round(lease_left_s, 1)})


def turn_limit_reached(max_turns: int) -> Conflict:
    return Conflict(f"this conversation reached its limit of {max_turns} turns; "
                    "start a new session", code="turn_limit_reached")


async def begin_turn(
    sessions: SessionStore, session_id: str, messages: list[StoredMessage], *,
    client_ids: list[str | None], setup: TurnSetup, setup_changed: bool,
    idempotency_key: str | None, swipes: Swipes = "never",
) -> Turn | Replay:
    """`swipes` as the store takes it, until the turn first finds its session busy: a
    re-send that arrived while the reply was being generated is that turn's retry."""
    settings = get_settings()
    token = uuid.uuid4().hex
    deadline = time.monotonic() + settings.turn_wait_s
    pause = FIRST_PAUSE_S
    while True:
        begun = await sessions.begin_turn(session_id, messages, token=token, client_ids=client_ids,
                                          setup=setup, setup_changed=setup_changed,
                                          idempotency_key=idempotency_key, swipes=swipes)
        if isinstance(begun, Busy):
            swipes = "never"
            left = deadline - time.monotonic()
            if left <= 0:
                raise TurnInProgress(begun.retry_after_ms / 1000)
            await asyncio.sleep(min(left, pause * (0.5 + random.random())))
            pause = min(pause * 1.5, LONGEST_PAUSE_S)
            continue
        if isinstance(begun, TurnLimit):
            raise turn_limit_reached(settings.max_turns)
        return begun

"""Beginning a turn under its session's lease, and keeping the lease while the turn lives:
one turn at a time, across instances.

A turn that finds another one in progress on its session waits for it (polling the
begin script with a short, growing, jittered pause) up to `TURN_WAIT_S`, then answers
409 `turn_in_progress` with Retry-After. A retry of a turn still in flight waits the
same way and then finds that turn's stored reply (`Replay`), so it never generates twice,
even where a re-sent history would otherwise be a swipe.

The lease is short (`TURN_LEASE_S`) and a living turn renews it in the background
(`LeaseKeeper`, every third of it), so a turn whose process died, or whose lease a
Redis restart brought back, frees its session within seconds, while a long generation
keeps it as long as it runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from roleplay.core.errors import Conflict
from roleplay.core.settings import get_settings
from roleplay.sessions.conversation_archive import bring_back
from roleplay.sessions.store import (
    Busy,
    Cold,
    LookupGuard,
    Replay,
    SessionStore,
    Stale,
    StoredMessage,
    Swipes,
    Turn,
    TurnLimit,
    TurnSetup,
)

logger = logging.getLogger("roleplay.sessions.turn")

FIRST_PAUSE_S = 0.02
LONGEST_PAUSE_S = 0.2


class TurnInProgress(Conflict):
    code = "turn_in_progress"

    def __init__(self, lease_left_s: float) -> None:
        super().__init__(
            "another turn of this session is being answered; send this one once it is done",
            headers={"Retry-After": "1"},
            details={"retry_after_s": 1, "lease_expires_in_s": round(lease_left_s, 1)})


class StaleLookup(Exception):
    """The copy of its lookup a turn began on no longer holds: read it, and begin again."""


def turn_limit_reached(max_turns: int) -> Conflict:
    return Conflict(f"this conversation reached its limit of {max_turns} turns; "
                    "start a new session", code="turn_limit_reached")


async def begin_turn(
    sessions: SessionStore, session_id: str, messages: list[StoredMessage], *,
    client_ids: list[str | None], setup: TurnSetup, setup_changed: bool,
    idempotency_key: str | None, swipes: Swipes = "never", guard: LookupGuard | None = None,
) -> Turn | Replay:
    """`swipes` as the store takes it, until the turn first finds its session busy: a
    re-send that arrived while the reply was being generated is that turn's retry.
    `guard`: the turn began on a copy of its lookup (`known_lookups`); `StaleLookup` when
    that no longer holds, before anything is written."""
    settings = get_settings()
    token = uuid.uuid4().hex
    deadline = time.monotonic() + settings.turn_wait_s
    pause = FIRST_PAUSE_S
    while True:
        begun = await sessions.begin_turn(session_id, messages, token=token, client_ids=client_ids,
                                          setup=setup, setup_changed=setup_changed,
                                          idempotency_key=idempotency_key, swipes=swipes,
                                          guard=guard)
        if isinstance(begun, Stale):
            raise StaleLookup
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
        if isinstance(begun, Cold):  # moved out since the turn read its metadata
            await bring_back(session_id)
            continue
        return begun


class LeaseKeeper:
    """Renews a turn's lease every third of `TURN_LEASE_S` in a background task, from
    `start` until `stop` (or the `async with` block's end): a turn waiting on the upstream
    or streaming its reply keeps its session, and one whose process dies lets it go
    within `TURN_LEASE_S`.

    A renewal that fails (Redis down for a moment) is tried again at the next beat; one
    that finds the lease gone (the turn ended, the session was deleted, or another turn
    took it) stops the keeper. With `idle_s`, the keeper also stops once nobody has
    `touch`ed it for that long, outside `reading()`: a stream nobody reads any more
    (its consumer gone without closing it) never holds its session for ever."""

    def __init__(self, sessions: SessionStore, lease: Turn) -> None:
        self.sessions = sessions
        self.lease = lease
        self.idle_s: float | None = None
        self.touched = time.monotonic()
        self.readers = 0
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> LeaseKeeper:
        """The first renewal is a timer, and only a turn still alive when it fires gets a
        task: most turns end sooner, and a timer costs a fraction of a task."""
        if self._task is None and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._every(), self._begin_renewing, loop)
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @staticmethod
    def _every() -> float:
        return get_settings().turn_lease_s / 3

    def _begin_renewing(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._task = loop.create_task(self._keep())

    def watch_idle(self, idle_s: float) -> None:
        """From now on, stop renewing once nobody has touched the keeper for `idle_s`."""
        self.idle_s = idle_s
        self.touch()

    def touch(self) -> None:
        self.touched = time.monotonic()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A read of the stream in progress: never idle while it waits (the upstream's own
        read timeout bounds that wait)."""
        self.readers += 1
        try:
            yield
        finally:
            self.readers -= 1
            self.touch()

    async def __aenter__(self) -> LeaseKeeper:
        return self.start()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self.stop()

    def _idle(self) -> bool:
        return (self.idle_s is not None and self.readers == 0
                and time.monotonic() - self.touched > self.idle_s)

    async def _keep(self) -> None:
        """Renews now (the first beat is due), then every third of the lease."""
        session_id = self.lease.session_id
        every = self._every()
        first = True
        while True:
            if not first:
                await asyncio.sleep(every)
            first = False
            if self._idle():
                logger.warning("session %s: its turn's stream was left unread; its lease is "
                               "let go", session_id)
                return
            try:
                held = await self.sessions.renew_turn(self.lease)
            except Exception as error:  # Redis away for now: the next beat tries again
                logger.warning("session %s: could not renew its turn's lease: %s", session_id,
                               error)
                continue
            if not held:
                logger.info("session %s: the turn's lease is gone (ended, deleted or taken); "
                            "no more renewals", session_id)
                return

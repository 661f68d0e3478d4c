"""A turn reads only what its session gained since this process last read its window
(`sessions.known_windows`): the window scripts answer from the known window's end when
its epoch and last message still hold, and whole otherwise, so a rewind, an edit or a
session made again under the same id is never served from memory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from roleplay.core.redis_client import redis_holder
from roleplay.sessions import store as session_store
from roleplay.sessions.known_windows import KnownWindow, KnownWindows, known_windows
from roleplay.sessions.store import (
    WINDOW_CAP,
    SessionStore,
    StoredMessage,
    Turn,
    TurnSetup,
    Window,
    new_message_id,
    now,
)

SETUP = TurnSetup(owner="anon:c:known", character_id=None, persona="a barista", scenario=None)
HEADER = 8
"""The fields before the messages in a window script's answer."""
T = TypeVar("T")


def message(role: str, content: str) -> StoredMessage:
    return StoredMessage(id=new_message_id(), role=role, content=content, at=now(), tokens=5)


def run(work: Callable[[], Awaitable[T]]) -> T:
    async def within() -> T:
        try:
            return await work()
        finally:
            await redis_holder.close()

    return asyncio.run(within())


async def turn(store: SessionStore, session_id: str, n: int) -> Turn:
    begun = await store.begin_turn(session_id, [message("user", f"line {n}")], token=f"t{n}",
                                   client_ids=[None], setup=SETUP, setup_changed=n == 0,
                                   idempotency_key=None)
    assert isinstance(begun, Turn)
    assert await store.append_reply(begun, message("assistant", f"reply {n}"))
    return begun


async def whole_window(store: SessionStore, session_id: str) -> Window:
    known_windows.forget(session_id)
    return await store.read_window(session_id)


async def answer_with(store: SessionStore, session_id: str, hint: str) -> list[Any]:
    return list(await session_store._READ_WINDOW_SCRIPT(store.keys(session_id)[:3], [WINDOW_CAP, hint]))


def contents(window: Window) -> list[str]:
    return [m.content for m in window.messages]


def test_a_window_already_known_is_answered_from_its_end() -> None:
    store, session_id = SessionStore(), "s-known-1"

    async def work() -> tuple[list[Any], list[Any], Window, Window]:
        for n in range(3):
            await turn(store, session_id, n)
        known = known_windows.get(session_id)
        assert known is not None and known.end == 6  # the begun window and the stored reply
        since_known = await answer_with(store, session_id, known.hint())
        whole = await answer_with(store, session_id, "")
        fourth = (await turn(store, session_id, 3)).window
        return since_known, whole, fourth, await whole_window(store, session_id)

    since_known, whole, fourth, after = run(work)
    assert len(since_known) == HEADER and int(since_known[7]) == 6  # nothing new to send
    assert len(whole) == HEADER + 6 and int(whole[7]) == 0
    assert contents(fourth) == [f"{kind} {n}" for n in range(3) for kind in ("line", "reply")] + ["line 3"]
    assert contents(after) == [*contents(fourth), "reply 3"]


def test_a_rewind_makes_the_next_window_whole_again() -> None:
    store, session_id = SessionStore(), "s-known-2"

    async def work() -> tuple[list[Any], Window]:
        for n in range(3):
            await turn(store, session_id, n)
        stale = known_windows.get(session_id)
        assert stale is not None
        assert await store.rewind_to(session_id, 2) == 4
        return await answer_with(store, session_id, stale.hint()), (await turn(store, session_id, 9)).window

    answer, window = run(work)
    assert int(answer[7]) == 0 and len(answer) == HEADER + 2  # the epoch moved on: whole
    assert contents(window) == ["line 0", "reply 0", "line 9"]


def test_a_known_window_whose_last_message_is_not_there_is_answered_whole() -> None:
    store, session_id = SessionStore(), "s-known-3"

    async def work() -> list[Any]:
        for n in range(2):
            await turn(store, session_id, n)
        known = known_windows.get(session_id)
        assert known is not None
        other = KnownWindow(known.epoch, known.start, (*known.messages[:-1], message("assistant", "?")))
        return await answer_with(store, session_id, other.hint())

    answer = run(work)
    assert int(answer[7]) == 0 and len(answer) == HEADER + 4


def test_known_windows_drop_the_least_recently_used_past_their_limit() -> None:
    windows = KnownWindows(limit=5)
    three = tuple(message("user", str(n)) for n in range(3))
    windows.remember("a", KnownWindow(1, 0, three))
    windows.remember("b", KnownWindow(1, 0, three))
    assert windows.get("a") is None and windows.get("b") is not None
    windows.extend("b", epoch=1, length=3, message=message("assistant", "r"))
    extended = windows.get("b")
    assert extended is not None and extended.end == 4
    windows.extend("b", epoch=2, length=4, message=message("assistant", "r"))  # another epoch
    assert windows.get("b") == extended

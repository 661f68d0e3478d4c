"""Finding a turn's session (`sessions.scope.owned_session_and`) costs one round trip
wherever the session may be: the caller's, its address's, the cold store. A conversation's
first turn looked in each place in turn (four round trips before the upstream was asked)."""

from __future__ import annotations

import asyncio

import pytest

from roleplay.characters.user_persona import persona_keys
from roleplay.core.identity import User
from roleplay.core.redis_client import get_redis, is_cluster, redis_holder
from roleplay.sessions import conversation_index
from roleplay.sessions.known_windows import KnownWindow, known_windows
from roleplay.sessions.scope import SessionLookup, owned_session_and, storage_id
from roleplay.sessions.store import SessionStore, StoredMessage
from tests.support.redis_writes import record_writes

COOKIE = User(id="anon:c:one", authenticated=False, fallback_owner="anon:a:home")


def _reads(writes: list[bytes]) -> list[bytes]:
    """The lookup's writes, not a new connection's handshake (a cluster opens some here)."""
    return [write for write in writes if b"GET" in write or b"ZCARD" in write]


def test_a_session_not_stored_anywhere_is_looked_for_everywhere_in_one_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listing = conversation_index.listing_key(COOKIE.id)

    async def look() -> tuple[SessionLookup, list[bytes], bool]:
        try:
            await (await get_redis()).ping()  # connects first: only the lookup is counted
            sent = record_writes(monkeypatch)
            found = await owned_session_and(COOKIE, "never-seen", SessionStore(),
                                            persona_keys(COOKIE), sizes_if_new=[listing])
            monkeypatch.undo()
            return found, _reads(sent), is_cluster()
        finally:
            await redis_holder.close()

    found, sent, cluster = asyncio.run(look())
    assert found.scoped.key == storage_id(COOKIE.id, "never-seen") and found.meta is None
    assert found.values == [None] * len(persona_keys(COOKIE))
    assert found.sizes == [0], "the list's room is read in the same round trip"
    # one pipeline: one write on one server; on a cluster, one per shard holding a key, sent
    # side by side (the two sessions, the two personas and the list may lie on other shards)
    assert (len(sent) == 1) if not cluster else (1 <= len(sent) <= 3)


def test_a_new_conversation_reads_the_room_in_its_lists_in_its_one_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listing = conversation_index.listing_key(COOKIE.id)

    async def look() -> tuple[SessionLookup, list[bytes], bool]:
        try:
            redis = await get_redis()
            await redis.zadd(listing, {"older": 1.0, "oldest": 0.5})
            sent = record_writes(monkeypatch)
            found = await owned_session_and(COOKIE, None, SessionStore(), persona_keys(COOKIE),
                                            sizes_if_new=[listing])
            monkeypatch.undo()
            await redis.delete(listing)
            return found, _reads(sent), is_cluster()
        finally:
            await redis_holder.close()

    found, sent, cluster = asyncio.run(look())
    assert found.meta is None and found.sizes == [2]
    assert (len(sent) == 1) if not cluster else (1 <= len(sent) <= 3)


def test_a_session_this_process_knows_does_not_read_the_room_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listing = conversation_index.listing_key(COOKIE.id)
    key = storage_id(COOKIE.id, "known-here")
    known_windows.remember(key, KnownWindow(epoch=1, start=0, messages=(
        StoredMessage(id="m1", role="user", content="안녕", at=1.0, tokens=2),)))

    async def look() -> tuple[SessionLookup, list[bytes]]:
        try:
            await (await get_redis()).ping()
            sent = record_writes(monkeypatch)
            found = await owned_session_and(COOKIE, "known-here", SessionStore(),
                                            persona_keys(COOKIE), sizes_if_new=[listing])
            monkeypatch.undo()
            return found, _reads(sent)
        finally:
            known_windows.forget(key)
            await redis_holder.close()

    found, sent = asyncio.run(look())
    assert found.sizes is None
    assert not any(b"ZCARD" in payload for payload in sent)

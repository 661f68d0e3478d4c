"""Finding a turn's session (`sessions.scope.owned_session_and`) costs one round trip
wherever the session may be: the caller's, its address's, the cold store. A conversation's
first turn looked in each place in turn (four round trips before the upstream was asked)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from roleplay.characters.user_persona import persona_keys
from roleplay.core.identity import User
from roleplay.core.redis_client import get_redis, is_cluster, redis_holder
from roleplay.sessions.scope import owned_session_and, storage_id
from roleplay.sessions.store import SessionStore

COOKIE = User(id="anon:c:one", authenticated=False, fallback_owner="anon:a:home")


def test_a_session_not_stored_anywhere_is_looked_for_everywhere_in_one_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    send = AbstractConnection.send_packed_command

    async def counting_send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        payload = b"".join(c.encode() if isinstance(c, str) else bytes(c)
                           for c in ([command] if isinstance(command, bytes | str) else command))
        if b"GET" in payload:  # not a new connection's handshake (a cluster opens some here)
            sent.append(payload)
        await send(self, command, check_health)

    async def look() -> tuple[Any, ...]:
        try:
            await (await get_redis()).ping()  # connects first: only the lookup is counted
            monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
            found = await owned_session_and(COOKIE, "never-seen", SessionStore(),
                                            persona_keys(COOKIE))
            monkeypatch.undo()
            return (*found, is_cluster())
        finally:
            await redis_holder.close()

    scoped, meta, values, cluster = asyncio.run(look())
    assert scoped.key == storage_id(COOKIE.id, "never-seen") and meta is None
    assert values == [None] * len(persona_keys(COOKIE))
    # one pipeline: one write on one server; on a cluster, one per shard holding a key, sent
    # side by side (the two sessions and the two personas may lie on different shards)
    assert (len(sent) == 1) if not cluster else (1 <= len(sent) <= 3)

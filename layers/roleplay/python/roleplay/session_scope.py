"""Sessions belong to their creator: the id a client chooses is scoped to its owner.

Redis stores a session under a key derived from (owner, session id), so two owners
who choose the same id never meet, and nobody can take an id before its owner uses
it. The owner is the signed-in user, or (sign-in off) the anonymous client. Clients
only ever see and send their own id; the derived key stays on the server side.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from roleplay.identity import User
from roleplay.redis_client import get_redis
from roleplay.redis_keys import redis_keys


@dataclass(frozen=True)
class ScopedSession:
    session_id: str
    """As the client names it (answers carry this one)."""
    key: str
    """As the session store names it: derived from the owner and `session_id`."""


def storage_id(owner: str, session_id: str) -> str:
    """A fixed-size id (it also passes `ID_PATTERN`, for the summarizer's events)."""
    digest = hashlib.sha256(f"{owner}\0{session_id}".encode()).hexdigest()
    return f"s{digest[:40]}"


async def scoped_session(user: User, session_id: str | None) -> ScopedSession:
    """`user`'s session `session_id` (a new id when None). An anonymous browser's session
    begun before it held its cookie is filed under its address: it is found there, at the
    cost of one round trip, only when the user has such a fallback and names an id."""
    if session_id is None:
        new_id = uuid.uuid4().hex
        return ScopedSession(new_id, storage_id(user.id, new_id))
    own = storage_id(user.id, session_id)
    if user.fallback_owner is None:
        return ScopedSession(session_id, own)
    fallback = storage_id(user.fallback_owner, session_id)
    keys = redis_keys()
    async with (await get_redis()).pipeline(transaction=False) as pipe:
        pipe.exists(keys.session(own))
        pipe.exists(keys.session(fallback))
        own_exists, fallback_exists = await pipe.execute()
    return ScopedSession(session_id, fallback if fallback_exists and not own_exists else own)

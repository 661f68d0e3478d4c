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
from roleplay.session_store import SessionMeta, SessionStore


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


async def owned_session(user: User, session_id: str | None,
                        store: SessionStore) -> tuple[ScopedSession, SessionMeta | None]:
    """`user`'s session `session_id` (a new id when None) and its metadata (None: not yet
    stored). The metadata read is the one a turn makes anyway, so scoping costs no round
    trip; only an anonymous browser's session begun before it held its cookie (filed under
    its address) is looked up a second time, and only when the first read finds nothing."""
    if session_id is None:
        new_id = uuid.uuid4().hex
        return ScopedSession(new_id, storage_id(user.id, new_id)), None
    own = ScopedSession(session_id, storage_id(user.id, session_id))
    meta = await store.load_meta(own.key)
    if meta is not None or user.fallback_owner is None:
        return own, meta
    fallback = ScopedSession(session_id, storage_id(user.fallback_owner, session_id))
    fallback_meta = await store.load_meta(fallback.key)
    return (fallback, fallback_meta) if fallback_meta is not None else (own, None)

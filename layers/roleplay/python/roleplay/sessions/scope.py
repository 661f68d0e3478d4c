"""Sessions belong to their creator: the id a client chooses is scoped to its owner.

Redis stores a session under a key derived from (owner, session id), so two owners
who choose the same id never meet, and nobody can take an id before its owner uses
it. The owner is the signed-in user, or (sign-in off) the anonymous client. Clients
only ever see and send their own id; the derived key stays on the server side.

A session filed under an address (made by a request without a cookie) is shared by the
address's cookie-less clients, as they are one user. The first cookie that reaches it
through its `fallback_owner` (the browser that made it, now holding its cookie) binds
it: its `owner` becomes that cookie's client, compared and set in one step. From then
on it is that cookie's alone: the address's cookie-less clients and its other cookies
no longer find it (404), and none of them can write into it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from roleplay.core.errors import NotFound
from roleplay.core.identity import ADDRESS_PREFIX, User
from roleplay.core.lua_script import LuaScript
from roleplay.core.redis_keys import redis_keys
from roleplay.sessions.conversation_archive import bring_back
from roleplay.sessions.known_windows import known_windows
from roleplay.sessions.store import SessionMeta, SessionStore

# KEYS: the session's metadata hash. ARGV: the address's user id, the cookie's user id.
# The session is the cookie's if it already was, or (binding it) if the address still owns
# it; answers 1 then, 0 when another cookie bound it first or the session is gone.
_BIND_SCRIPT = LuaScript("""
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == ARGV[2] then return 1 end
if owner == ARGV[1] or (owner == false and redis.call('EXISTS', KEYS[1]) == 1) then
  redis.call('HSET', KEYS[1], 'owner', ARGV[2])
  return 1
end
return 0
""")


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


ADDRESS_FILED = "a-"
"""Starts the ids the server makes for a client known only by its address: a browser's
first session, begun before it had its cookie. Its later turns (with the cookie) look
there first."""


def _new_id(user: User) -> str:
    return (ADDRESS_FILED if user.id.startswith(ADDRESS_PREFIX) else "") + uuid.uuid4().hex


async def owned_session(user: User, session_id: str | None,
                        store: SessionStore) -> tuple[ScopedSession, SessionMeta | None]:
    """`user`'s session `session_id` (a new id when None) and its metadata (None: not yet
    stored). The metadata read is the one a turn makes anyway, so scoping costs no round
    trip: every place the session may be is read in that one; a conversation in the cold
    store is brought back first. An anonymous browser's session begun before it held its
    cookie is filed under its address (`fallback_owner`): that is read too, first for ids
    the server made there."""
    found = await owned_session_and(user, session_id, store, ())
    return found.scoped, found.meta


class SessionLookup(NamedTuple):
    scoped: ScopedSession
    meta: SessionMeta | None
    values: list[str | None]
    """The string values at the keys asked for."""
    sizes: list[int] | None
    """The sizes of the sorted sets asked for; None when they were not read."""
    fields: dict[str, str] | None = None
    """The session's hash as this lookup read it, when that is how it stands (not brought
    back from the cold store, not bound to a cookie by this lookup): `known_lookups`."""


async def owned_session_and(
    user: User, session_id: str | None, store: SessionStore, keys: Sequence[str], *,
    sizes_if_new: Sequence[str] = (),
) -> SessionLookup:
    """`owned_session`, and the string values at `keys` read in the same round trip
    (alone when there is no session to read yet). `sizes_if_new`: the sorted sets whose
    size a new conversation needs (the user's list: `conversation_index.ensure_room`),
    read in that round trip too when the session may be new: a new id, or one this
    process has not seen a turn of (`known_windows`). Otherwise a turn of a known
    session pays nothing for them."""
    if session_id is None:
        new_id = _new_id(user)
        values, sizes = await store.read_values(keys, sizes_if_new)
        return SessionLookup(ScopedSession(new_id, storage_id(user.id, new_id)), None, values,
                             sizes if sizes_if_new else None)
    own = ScopedSession(session_id, storage_id(user.id, session_id))
    candidates = [own]
    if user.fallback_owner is not None:
        fallback = ScopedSession(session_id, storage_id(user.fallback_owner, session_id))
        candidates = [fallback, own] if session_id.startswith(ADDRESS_FILED) else [own, fallback]
    if any(known_windows.get(candidate.key) for candidate in candidates):
        sizes_if_new = ()
    found, values, sizes = await store.find([candidate.key for candidate in candidates], keys,
                                            sizes_if_new)
    read_sizes = sizes if sizes_if_new else None
    for candidate, (meta, cold, fields) in zip(candidates, found, strict=True):
        if meta is None and cold and await bring_back(candidate.key):
            meta, fields = await store.load_meta(candidate.key), {}
        if meta is None:
            continue
        if candidate is own:
            _ensure_not_bound_away(user, meta)
            return SessionLookup(own, meta, values, read_sizes, fields or None)
        assert user.fallback_owner is not None
        if meta.owner == user.id:  # bound to this cookie before
            return SessionLookup(candidate, meta, values, read_sizes, fields or None)
        if await _BIND_SCRIPT([redis_keys().session(candidate.key)], [user.fallback_owner, user.id]):
            return SessionLookup(candidate, meta.model_copy(update={"owner": user.id}), values,
                                 read_sizes)
    return SessionLookup(own, None, values, read_sizes)


def _ensure_not_bound_away(user: User, meta: SessionMeta) -> None:
    """An address's session that a cookie bound is no longer the address's: 404, and not a
    new session either (its keys are taken; a turn would write into the cookie's)."""
    if user.id.startswith(ADDRESS_PREFIX) and meta.owner not in (None, user.id):
        raise NotFound("no such session", code="session_not_found")

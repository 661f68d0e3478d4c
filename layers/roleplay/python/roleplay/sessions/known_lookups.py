"""What this process's last turn of a session found in its lookup, so the session's next
turn here begins without reading it again: one Redis round trip fewer on a conversation's
steady turns (issue 30).

A copy is a guess, checked where it counts: the turn's begin script compares
`lookup_guard` of what the copy was read from (the session's owner, setup, summary, pins
and last summary failure; the user's persona and the character as stored) with the same
read of them now, before it writes anything, and answers `Stale` when anything differs
(another process changed the session, the persona or the character; the session was
deleted or went cold). The turn then reads its lookup and begins again
(`chat.preparation`). A turn that changed its session's setup forgets the copy.

One Redis server only: the guard reads the persona's and the character's keys in the
session's script, which a cluster refuses (they lie on other shards). On a cluster every
turn reads its lookup, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from roleplay.core.redis_client import is_cluster
from roleplay.sessions.scope import SessionLookup
from roleplay.sessions.store import LookupGuard, lookup_guard

KEPT = 8_192
"""Sessions remembered at most, least recently used forgotten first."""
KEPT_CHARACTERS = 16_000_000
"""Characters of stored text the copies hold at most (a session's hash, the persona's and
the character's card as stored: a card with a lorebook may be tens of thousands), about
16-64 MB: least recently used forgotten first."""


@dataclass(frozen=True)
class KnownLookup:
    lookup: SessionLookup
    guard: LookupGuard
    size: int
    """Characters of stored text it holds."""


class KnownLookups:
    def __init__(self, limit: int = KEPT, characters: int = KEPT_CHARACTERS) -> None:
        self.limit = limit
        self.characters = characters
        self._known: OrderedDict[tuple[str, str], KnownLookup] = OrderedDict()
        self._size = 0

    def get(self, user_id: str, session_id: str | None, keys: Sequence[str]) -> KnownLookup | None:
        """The copy of (user, session)'s lookup, if it read the same `keys` beside the
        session and the store is one server."""
        if session_id is None or is_cluster():
            return None
        known = self._known.get((user_id, session_id))
        if known is None or known.guard.keys != tuple(keys):
            return None
        self._known.move_to_end((user_id, session_id))
        return known

    def remember(self, user_id: str, lookup: SessionLookup, keys: Sequence[str]) -> None:
        """`lookup`, which read `keys` beside the session, for the session's next turn; a
        lookup that found no session as it stands (`SessionLookup.fields`) is not kept."""
        if lookup.fields is None or lookup.meta is None or is_cluster():
            return
        size = (sum(len(value) for value in lookup.fields.values())
                + sum(len(value) for value in lookup.values if value))
        if size > self.characters:
            return
        session = (user_id, lookup.scoped.session_id)
        self.forget(*session)
        self._known[session] = KnownLookup(
            lookup, LookupGuard(tuple(keys), lookup_guard(lookup.fields, lookup.values)), size)
        self._size += size
        while len(self._known) > self.limit or self._size > self.characters:
            _, oldest = self._known.popitem(last=False)
            self._size -= oldest.size

    def forget(self, user_id: str, session_id: str | None) -> None:
        if session_id is not None:
            known = self._known.pop((user_id, session_id), None)
            if known is not None:
                self._size -= known.size


known_lookups = KnownLookups()

"""Which character each session played at its last turn in this process.

A turn that names no character plays its session's, which the session read tells; a
turn that knows it beforehand reads the character beside the session, in the same round
trip, instead of after it (`preparation.prepare`). The guess is only a guess: when the
session says otherwise (its character changed in another process), the turn reads the
right one as before.
"""

from __future__ import annotations

from collections import OrderedDict

KEPT = 8_192
"""Sessions remembered, least recently used forgotten first (a hundred bytes or so each)."""


class SessionCharacters:
    def __init__(self, limit: int = KEPT) -> None:
        self.limit = limit
        self._characters: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, session: tuple[str, str | None]) -> str | None:
        """The character of (user id, session id) at its last turn here (None: unknown)."""
        user_id, session_id = session
        return self._characters.get((user_id, session_id)) if session_id is not None else None

    def remember(self, session: tuple[str, str], character_id: str) -> None:
        self._characters[session] = character_id
        self._characters.move_to_end(session)
        if len(self._characters) > self.limit:
            self._characters.popitem(last=False)

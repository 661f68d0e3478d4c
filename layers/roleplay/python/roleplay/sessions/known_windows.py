"""The windows this process last read, so a turn reads only what was added since.

A conversation's window (every message after the summary's watermark, up to 256) came
back whole from Redis on every turn: each message shipped, decoded and looked up again,
and parsed again once a process held more windows than its parse cache (issue 30: at a
hundred sessions of a hundred messages, most of a turn's CPU). A session's messages
never change in place without its epoch moving on (`sessions.store`: every rewind, edit
and swipe choice moves it; a new session under the same id starts at a random one), so
a window this process read under the same epoch still holds, message for message, up to
where it ended. The window scripts take a hint (`KnownWindow.hint`): the epoch, where
the known part starts and ends, and the id of its last message, which they check before
answering from its end onwards only; anything that does not match is answered whole.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store builds windows with this module; it imports nothing back
    from roleplay.sessions.store import StoredMessage

KNOWN_MESSAGES = 32_768
"""Messages kept across all known windows, about 1.5 KB each for a short line (50 MB at
most then): the least recently used sessions' windows go first. Sessions taking turns in
rotation over more messages than this find none of theirs kept, as an LRU cache does."""


@dataclass(frozen=True)
class KnownWindow:
    epoch: int
    start: int
    """The transcript index of `messages[0]`."""
    messages: tuple[StoredMessage, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.messages)

    def hint(self) -> str:
        """What the window scripts check: '<epoch> <start> <end> <id of the last message>'."""
        last = self.messages[-1].id if self.messages else ""
        return f"{self.epoch} {self.start} {self.end} {last}" if last else ""

    def through(self, first: int, sent_from: int) -> list[StoredMessage]:
        """Messages `first` .. `sent_from - 1`, as the script vouched for them."""
        if sent_from != self.end or not self.start <= first <= sent_from:
            raise RuntimeError(f"a window answered from {sent_from} for a known {self.start}..{self.end}")
        return list(self.messages[first - self.start:])


class KnownWindows:
    """Per process, bounded by `KNOWN_MESSAGES` in all. Entries are replaced whole, never
    changed, so a turn that captured one before its round trip uses exactly that one."""

    def __init__(self, limit: int = KNOWN_MESSAGES) -> None:
        self.limit = limit
        self._windows: OrderedDict[str, KnownWindow] = OrderedDict()
        self._held = 0

    def get(self, session_id: str) -> KnownWindow | None:
        return self._windows.get(session_id)

    def remember(self, session_id: str, window: KnownWindow) -> None:
        self.forget(session_id)
        if not window.messages or len(window.messages) > self.limit:
            return
        self._windows[session_id] = window
        self._held += len(window.messages)
        while self._held > self.limit:
            _, evicted = self._windows.popitem(last=False)
            self._held -= len(evicted.messages)

    def extend(self, session_id: str, *, epoch: int, length: int, message: StoredMessage) -> None:
        """A reply stored at `length` (the transcript's length before it) under `epoch`:
        the known window grows by it, if it ended right there."""
        known = self._windows.get(session_id)
        if known is not None and known.epoch == epoch and known.end == length:
            self.remember(session_id, KnownWindow(epoch, known.start, (*known.messages, message)))

    def forget(self, session_id: str) -> None:
        old = self._windows.pop(session_id, None)
        if old is not None:
            self._held -= len(old.messages)


known_windows = KnownWindows()

"""The store step each kind of turn begins with (`preparation.TurnStart`).

A turn appends the user's messages (`AppendTurn`); a re-sent history already answered is
a retry or a swipe, and a swipe is a regenerate (`control.replace_turn.ReplaceTurn`),
whose reply becomes another version of the stored one. The rule, for both APIs:

- an `Idempotency-Key` (`/api/chat`) decides alone: the same key is the same turn;
- a re-sent history that ends with a user message already answered is a swipe when the
  answer was whole and the re-send did not arrive while it was being generated (then it
  waits for it and gets it: a retry), else a retry;
- `/api/chat` clients send only the new message, so a lone message is not a history:
  within `TURN_RETRY_WINDOW_S` of its answer it is a retry, later a new turn (people do
  say "ok" twice); `/v1` clients always send the whole conversation, so there even a
  first exchange re-sent is a swipe.
"""

from __future__ import annotations

from roleplay.chat.control.replace_turn import ReplaceTurn
from roleplay.chat.preparation import AppendTurn


def chat_turn_start(idempotency_key: str | None) -> AppendTurn:
    """`/api/chat`'s turn."""
    return AppendTurn(idempotency_key, swipes="never" if idempotency_key else "history",
                      swipe=ReplaceTurn("regenerate"))


def whole_history_turn_start() -> AppendTurn:
    """`/v1`'s session turn: the client re-sends the whole conversation every time."""
    return AppendTurn(swipes="any", swipe=ReplaceTurn("regenerate"))

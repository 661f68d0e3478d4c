"""Conversations that outlive their hot window: moved out of Redis to the cold store and
brought back whole on their next use (issue 31). Being written; `sweep_idle` is the entry
point the scheduled job and the local runner call."""

from __future__ import annotations


async def sweep_idle() -> dict[str, int]:
    """Moves the conversations idle longer than `SESSION_HOT_TTL_S` to the cold store and
    forgets those past `CONVERSATION_RETENTION_DAYS`; answers counts by outcome
    (`archived`, `expired`, `skipped`, `failed`)."""
    return {"archived": 0, "expired": 0, "skipped": 0, "failed": 0}

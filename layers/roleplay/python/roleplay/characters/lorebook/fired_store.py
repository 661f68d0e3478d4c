"""Which entries fired on a session's last turn, for `GET /api/chat/sessions/{id}`.

A key of its own beside the session's (same TTL), so the session store's layout is
untouched by lorebooks.
"""

from __future__ import annotations

import json
from typing import Any

from roleplay.characters.lorebook.activation import LoreSelection
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings


def fired_view(selection: LoreSelection) -> dict[str, Any]:
    def brief(entries: Any) -> list[dict[str, Any]]:
        return [{"index": e.index, "id": e.id, "name": e.name, "position": e.position,
                 "reason": e.reason, "tokens": e.tokens} for e in entries]
    return {"fired": brief(selection.fired), "over_budget": brief(selection.over_budget),
            "tokens": selection.tokens}


async def save_fired(session_id: str, selection: LoreSelection) -> None:
    key = redis_keys().session_lorebook(session_id)
    redis = await get_redis()
    await redis.set(key, json.dumps(fired_view(selection), ensure_ascii=False),
                    ex=get_settings().conversation_ttl_s)


async def load_fired(session_id: str) -> dict[str, Any] | None:
    raw = await (await get_redis()).get(redis_keys().session_lorebook(session_id))
    return json.loads(raw) if raw else None

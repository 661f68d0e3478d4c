"""The PNG a card was imported in, kept so its export shows the same picture.

In Redis beside the character (base64, since the shared client decodes replies as
text), for both character stores: a DynamoDB item cannot hold more than 400 KB.
"""

from __future__ import annotations

import base64

from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys


def image_bytes(image: bytes) -> int:
    """What `image` takes stored (base64)."""
    return 4 * ((len(image) + 2) // 3)


async def stored_image_bytes(character_id: str) -> int:
    return int(await (await get_redis()).strlen(redis_keys().character_image(character_id)))


async def save_image(character_id: str, image: bytes) -> None:
    await (await get_redis()).set(redis_keys().character_image(character_id),
                                  base64.b64encode(image).decode("ascii"))


async def load_image(character_id: str) -> bytes | None:
    raw = await (await get_redis()).get(redis_keys().character_image(character_id))
    return base64.b64decode(raw) if raw else None


async def delete_image(character_id: str) -> None:
    await (await get_redis()).delete(redis_keys().character_image(character_id))

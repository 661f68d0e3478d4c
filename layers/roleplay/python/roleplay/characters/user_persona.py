"""Who the user plays: a name and a description, one per user (`{{user}}` in cards).

Keyed by the caller's user id, so it works the same for signed-in users and for
anonymous clients (each has its own id once identities are per client). A chat request
may bring its own (`user_persona`), which wins for that turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from roleplay.characters.model import SceneText
from roleplay.core.identity import User
from roleplay.core.redis_client import get_redis, read_strings
from roleplay.core.redis_keys import redis_keys


class UserPersona(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    description: SceneText = ""


def persona_keys(user: User) -> list[str]:
    """Where the user's persona may be: under the user, and, for an anonymous browser
    whose first request came before its cookie, under its address (`fallback_owner`)."""
    keys = redis_keys()
    return [keys.user_persona(owner)
            for owner in [user.id, *([user.fallback_owner] if user.fallback_owner else [])]]


def persona_from(values: Sequence[str | None]) -> UserPersona | None:
    """The persona among the values read at `persona_keys`, the user's own first."""
    raw = next((item for item in values if item), None)
    return UserPersona.model_validate_json(raw) if raw else None


async def load_user_persona(user: User) -> UserPersona | None:
    """The user's persona, in one round trip (`persona_keys`)."""
    return persona_from(await read_strings(persona_keys(user)))


async def save_user_persona(user: User, persona: UserPersona) -> UserPersona:
    await (await get_redis()).set(redis_keys().user_persona(user.id), persona.model_dump_json())
    return persona


async def persona_for_turn(given: UserPersona | None, user: User) -> UserPersona | None:
    """The request's persona when it has one, else the user's stored one."""
    return given if given is not None else await load_user_persona(user)

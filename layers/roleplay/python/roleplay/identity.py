"""Who is calling: the user named by the login's JWT, or anonymous when auth is off.

Handlers depend on `current_user`; the token checks live in `roleplay.auth`.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

ANONYMOUS_ID = "anonymous"


@dataclass(frozen=True)
class User:
    id: str
    authenticated: bool
    is_admin: bool = False
    """The token says `admin: true` or lists "admin" in `roles` (e.g. for health's targets)."""


ANONYMOUS = User(id=ANONYMOUS_ID, authenticated=False)


async def current_user(request: Request) -> User:
    """FastAPI dependency: 401 unless the request carries a good token (when JWT_SECRET is set)."""
    from roleplay.auth import user_from_request  # imported here: auth imports this module

    return await user_from_request(request)

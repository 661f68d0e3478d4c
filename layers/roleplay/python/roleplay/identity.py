"""Who is calling. Without auth configured every caller is the anonymous user.

The concurrent-user issue adds JWT verification here; handlers already depend on
`current_user`, so they will not change.
"""

from __future__ import annotations

from dataclasses import dataclass

ANONYMOUS_ID = "anonymous"


@dataclass(frozen=True)
class User:
    id: str
    authenticated: bool


ANONYMOUS = User(id=ANONYMOUS_ID, authenticated=False)


async def current_user() -> User:
    return ANONYMOUS

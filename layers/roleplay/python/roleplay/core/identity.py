"""Who is calling, as every layer module sees it: a plain value, no way of finding out.

The lowest module of the sign-in stack: `auth` (JWTs) and `anonymous_client` (the
cookie or the address, with sign-in off) make a `User`; nothing here imports them.
Handlers depend on `roleplay.web.auth.current_user`.
"""

from __future__ import annotations

from dataclasses import dataclass

ANONYMOUS_ID = "anonymous"
ANONYMOUS_PREFIX = "anon:"
"""Every anonymous client's id starts with this; no signed-in subject may (nor be `anonymous`)."""


@dataclass(frozen=True)
class User:
    id: str
    authenticated: bool
    is_admin: bool = False
    """The login's token says so (`admin: true`, or `admin` in its `roles`)."""
    fallback_owner: str | None = None
    """Another owner whose sessions and slot this user also holds: an anonymous browser's
    address, under which its very first request (made before it had its cookie) was filed."""


ANONYMOUS = User(id=ANONYMOUS_ID, authenticated=False)
ADDRESS_PREFIX = f"{ANONYMOUS_PREFIX}a:"
"""An anonymous client known only by its address (it sent no cookie)."""


def reserved_subject(subject: str) -> bool:
    """Whether a signed-in subject would pass for an anonymous client."""
    return subject == ANONYMOUS_ID or subject.startswith(ANONYMOUS_PREFIX)

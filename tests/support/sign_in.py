"""Signing a user in, for every test that needs one: the one `JWT_SECRET` of the tests and
the login's tokens (HS256, `sub` and `exp`), as a token or as a Bearer header.

In-process tests turn sign-in on with the `auth_on` fixture (tests/conftest.py), or with
`settings_env(JWT_SECRET=SECRET)` when only part of a test is signed in; a server started
in its own process gets `JWT_SECRET=SECRET` in its environment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

SECRET = "test-secret-long-enough-even-for-hs512-" + "0123456789abcdef" * 2
"""64 bytes: long enough for every HMAC algorithm, so a test may sign with HS512 too."""

LIFETIME_S = 600


def mint(claims: Mapping[str, Any] | None = None, *, key: str = SECRET, algorithm: str = "HS256",
         drop: tuple[str, ...] = ()) -> str:
    """A token as the login issues it: `sub` "user-1" and `exp` in ten minutes unless
    `claims` say otherwise; `drop` leaves claims out, `key` and `algorithm` sign it
    otherwise (for the tests of what is refused)."""
    import jwt  # when first used: tests/conftest.py imports this module for every test

    payload: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + LIFETIME_S, **(claims or {})}
    for name in drop:
        payload.pop(name)
    return jwt.encode(payload, key, algorithm=algorithm)


def bearer(sub: str = "user-1", **claims: Any) -> dict[str, str]:
    """The Authorization header of a user signed in as `sub` (with any more claims)."""
    return {"Authorization": f"Bearer {mint({'sub': sub, **claims})}"}

"""The session store's id of a test client's session: sessions are kept under a key
derived from (owner, session id) (roleplay.sessions.scope), so tests that reach past the
HTTP API into the store or the summarizer ask for it here."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient
from starlette.requests import Request

from roleplay.sessions.scope import owned_session
from roleplay.sessions.store import SessionStore
from roleplay.web.anonymous_client import anonymous_user


def session_key(client: TestClient, session_id: str) -> str:
    """As the server resolves it for `client` (anonymous: its cookie, else its address)."""
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "headers": [(b"cookie", cookies.encode())] if cookies else [],
             "client": ("testclient", 50000)}

    async def resolve() -> str:
        user = await anonymous_user(Request(scope))
        return (await owned_session(user, session_id, SessionStore()))[0].key

    return asyncio.run(resolve())

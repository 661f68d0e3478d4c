"""Who is calling `/v1`: a static API key, else our JWT, both as `Authorization: Bearer`.

Auth is on when JWT_SECRET(_ARN) or API_KEYS_FILE/ARN is set; then a missing or
unknown credential is a 401 (in OpenAI's shape, see `errors`). With neither set,
every caller is anonymous, as on `/api`.
"""

from __future__ import annotations

from starlette.requests import Request

from roleplay.core import request_context
from roleplay.core.errors import Unauthorized
from roleplay.core.identity import User
from roleplay.core.settings import get_settings
from roleplay.openai_compat.api_keys import api_keys_enabled, user_for_key
from roleplay.web.auth import user_from_request
from roleplay.web.jwt_key import auth_enabled

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def openai_caller(request: Request) -> User:
    """FastAPI dependency for the `/v1` routes; the caller is noted on the request's log
    line, which is also who the upstream's breaker counts a failure against."""
    user = await _caller(request)
    request_context.note(user=request_context.hashed(user.id))
    return user


async def _caller(request: Request) -> User:
    settings = get_settings()
    keys_on = api_keys_enabled(settings)
    token = _bearer(request)
    if keys_on and token is not None:
        user_id = user_for_key(token, settings)
        if user_id is not None:
            return User(id=user_id, authenticated=True)
    if auth_enabled(settings) or not keys_on:
        return await user_from_request(request)  # with sign-in off: the anonymous client
    if token is None:
        raise Unauthorized("an API key is needed: send it as Authorization: Bearer <key>",
                           code="missing_api_key", headers=_CHALLENGE)
    raise Unauthorized("incorrect API key", code="invalid_api_key", headers=_CHALLENGE)

"""Who is calling, from the JWT the app's login issued (HS256, shared JWT_SECRET).

The token comes from `Authorization: Bearer` (API clients) or else from the HttpOnly
cookie the login sets (JWT_COOKIE_NAME; browsers). Its `sub` is the user id, and it
must carry `exp`. Only HS256 is accepted: a token cannot choose `none` or another
algorithm to get past the check. JWT_AUDIENCE / JWT_ISSUER are checked when set.

Without JWT_SECRET or JWT_SECRET_ARN (development) there is no sign-in and every
caller is an anonymous client (`roleplay.web.anonymous_client`). A token's subject can never
pass for one: `anonymous` and `anon:...` subjects are 401. `admin: true`, or `admin` in
a `roles` list, makes the user an admin.
PyJWT is imported on first use, so a cold start without auth never loads it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from roleplay.core import request_context
from roleplay.core.errors import Unauthorized
from roleplay.core.identity import User, reserved_subject
from roleplay.core.settings import Settings, get_settings
from roleplay.web.anonymous_client import anonymous_user
from roleplay.web.jwt_key import auth_enabled, jwt_key

ALGORITHM = "HS256"
LEEWAY_S = 60
"""Clock skew tolerated on `exp`, `nbf` and `iat` between the login server and this one."""

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_INVALID_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _token_from(request: Request, cookie_name: str) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(cookie_name) or None


def _claims(token: str, settings: Settings) -> dict[str, Any]:
    import jwt
    from jwt.exceptions import ExpiredSignatureError, InvalidTokenError

    key = jwt_key(settings)
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"], "verify_aud": settings.jwt_audience is not None},
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=LEEWAY_S,
        )
    except ExpiredSignatureError:
        raise Unauthorized("token expired; sign in again", code="token_expired",
                           headers=_INVALID_CHALLENGE) from None
    except InvalidTokenError as error:
        raise Unauthorized(f"invalid token: {error}", code="invalid_token",
                           headers=_INVALID_CHALLENGE) from None


async def user_from_request(request: Request) -> User:
    """The signed-in user; 401 (`unauthorized`, `token_expired`, `invalid_token`) if the
    token is missing or not good. Anonymous when auth is not configured."""
    settings = get_settings()
    if not auth_enabled(settings):
        return await anonymous_user(request)
    token = _token_from(request, settings.jwt_cookie_name)
    if token is None:
        raise Unauthorized("sign in first", headers=_CHALLENGE)
    claims = _claims(token, settings)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise Unauthorized("invalid token: sub must be a non-empty string", code="invalid_token",
                           headers=_INVALID_CHALLENGE)
    if reserved_subject(subject):
        raise Unauthorized(f"invalid token: sub {subject!r} is reserved for anonymous clients",
                           code="invalid_token", headers=_INVALID_CHALLENGE)
    return User(id=subject, authenticated=True, is_admin=_is_admin(claims))


def _is_admin(claims: dict[str, Any]) -> bool:
    roles = claims.get("roles")
    return claims.get("admin") is True or (isinstance(roles, list) and "admin" in roles)


async def current_user(request: Request) -> User:
    """FastAPI dependency: 401 unless the request carries a good token (when sign-in is
    on); the anonymous client when it is off."""
    user = await user_from_request(request)
    request_context.note(user=request_context.hashed(user.id))
    return user

"""Who is calling: JWTs from the login, read from a Bearer header or the HttpOnly cookie."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import jwt
import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from starlette.requests import Request

from roleplay.core.errors import Unauthorized
from roleplay.core.identity import ANONYMOUS_PREFIX, User
from roleplay.core.settings import get_settings
from roleplay.web.auth import user_from_request
from roleplay.web.function_app import create_function_app
from tests.support.sign_in import SECRET, mint


@pytest.fixture
def auth_on(auth_on: Callable[..., None]) -> Callable[..., None]:
    """Sign-in on (tests/conftest.py), with the cookie, audience and issuer at their defaults."""
    auth_on(JWT_COOKIE_NAME="access_token", JWT_AUDIENCE="", JWT_ISSUER="")
    return auth_on


def request(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": raw})


def who(req: Request) -> User:
    return asyncio.run(user_from_request(req))


def refused(req: Request) -> Unauthorized:
    with pytest.raises(Unauthorized) as failure:
        who(req)
    assert failure.value.status_code == 401
    assert failure.value.headers["WWW-Authenticate"].startswith("Bearer")
    return failure.value


def anonymous(user: User) -> bool:
    return not user.authenticated and not user.is_admin and user.id.startswith(ANONYMOUS_PREFIX)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- no secret: development ------------------------------------------------------------


def test_without_a_secret_everyone_is_anonymous(
    settings_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    get_settings.cache_clear()
    assert anonymous(who(request()))
    assert anonymous(who(request({"Authorization": f"Bearer {mint()}"})))


def test_a_blank_secret_means_unset(settings_env: Callable[..., None]) -> None:
    settings_env(JWT_SECRET="   ")
    assert get_settings().jwt_secret is None
    assert anonymous(who(request()))


def test_the_secret_never_prints(auth_on: Callable[..., None]) -> None:
    settings = get_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == SECRET


# --- valid tokens ----------------------------------------------------------------------


def test_valid_cookie(auth_on: Callable[..., None]) -> None:
    assert who(request(cookies={"access_token": mint()})) == User(id="user-1", authenticated=True)


def test_cookie_name_is_configurable(auth_on: Callable[..., None]) -> None:
    auth_on(JWT_COOKIE_NAME="rp_session")
    assert who(request(cookies={"rp_session": mint()})).id == "user-1"
    assert refused(request(cookies={"access_token": mint()})).error_code == "unauthorized"


def test_valid_bearer(auth_on: Callable[..., None]) -> None:
    assert who(request({"Authorization": f"Bearer {mint({'sub': 'u-42'})}"})) == User("u-42", True)


def test_bearer_scheme_is_case_insensitive(auth_on: Callable[..., None]) -> None:
    assert who(request({"Authorization": f"bearer {mint()}"})).id == "user-1"


def test_bearer_comes_before_the_cookie(auth_on: Callable[..., None]) -> None:
    req = request({"Authorization": f"Bearer {mint({'sub': 'from-header'})}"},
                  cookies={"access_token": mint({"sub": "from-cookie"})})
    assert who(req).id == "from-header"


def test_other_authorization_schemes_fall_back_to_the_cookie(auth_on: Callable[..., None]) -> None:
    req = request({"Authorization": "Basic dXNlcjpwYXNz"}, cookies={"access_token": mint()})
    assert who(req).id == "user-1"


def test_expiry_within_the_leeway_is_accepted(auth_on: Callable[..., None]) -> None:
    assert who(request(cookies={"access_token": mint({"exp": int(time.time()) - 30})})).id == "user-1"


def test_audience_and_issuer_are_checked_when_set(auth_on: Callable[..., None]) -> None:
    auth_on(JWT_AUDIENCE="roleplay", JWT_ISSUER="https://login.example")
    good = mint({"aud": "roleplay", "iss": "https://login.example"})
    assert who(request(cookies={"access_token": good})).id == "user-1"
    for claims in ({"aud": "other", "iss": "https://login.example"},
                   {"aud": "roleplay", "iss": "https://evil.example"},
                   {"iss": "https://login.example"}):
        assert refused(request(cookies={"access_token": mint(claims)})).error_code == "invalid_token"


def test_audience_is_not_checked_when_unset(auth_on: Callable[..., None]) -> None:
    assert who(request(cookies={"access_token": mint({"aud": "anything"})})).id == "user-1"


# --- refused ---------------------------------------------------------------------------


def test_missing_token(auth_on: Callable[..., None]) -> None:
    error = refused(request())
    assert error.error_code == "unauthorized"
    assert error.message == "sign in first"
    assert error.headers["WWW-Authenticate"] == "Bearer"


def test_empty_bearer_and_cookie_count_as_missing(auth_on: Callable[..., None]) -> None:
    assert refused(request({"Authorization": "Bearer  "}, cookies={"access_token": ""})).error_code \
        == "unauthorized"


def test_expired(auth_on: Callable[..., None]) -> None:
    error = refused(request(cookies={"access_token": mint({"exp": int(time.time()) - 120})}))
    assert error.error_code == "token_expired"


def test_tampered_signature(auth_on: Callable[..., None]) -> None:
    header, payload, signature = mint().split(".")
    forged_payload = b64({"sub": "admin", "exp": int(time.time()) + 300})
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for token in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{flipped}"):
        assert refused(request({"Authorization": f"Bearer {token}"})).error_code == "invalid_token"


def test_signed_with_another_secret(auth_on: Callable[..., None]) -> None:
    token = mint(key=SECRET[::-1])
    assert refused(request(cookies={"access_token": token})).error_code == "invalid_token"


def test_alg_none_is_refused(auth_on: Callable[..., None]) -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'admin', 'exp': time.time() + 300})}."
    assert refused(request({"Authorization": f"Bearer {unsigned}"})).error_code == "invalid_token"


def test_other_algorithms_are_refused(auth_on: Callable[..., None]) -> None:
    for algorithm in ("HS384", "HS512"):
        token = mint(algorithm=algorithm)  # right secret, wrong algorithm
        assert refused(request(cookies={"access_token": token})).error_code == "invalid_token"


def test_malformed(auth_on: Callable[..., None]) -> None:
    for token in ("not-a-jwt", "a.b.c", "...."):
        assert refused(request({"Authorization": f"Bearer {token}"})).error_code == "invalid_token"


def test_missing_sub(auth_on: Callable[..., None]) -> None:
    error = refused(request(cookies={"access_token": mint(drop=("sub",))}))
    assert error.error_code == "invalid_token"
    assert "sub" in error.message


def test_blank_or_non_string_sub(auth_on: Callable[..., None]) -> None:
    header = b64({"alg": "HS256", "typ": "JWT"})
    for sub in ("", "  ", 42):
        signing_input = f"{header}.{b64({'sub': sub, 'exp': int(time.time()) + 300})}"
        signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(signing_input.encode(), SECRET.encode())
        token = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
        assert refused(request(cookies={"access_token": token})).error_code == "invalid_token"


def test_missing_exp(auth_on: Callable[..., None]) -> None:
    error = refused(request(cookies={"access_token": mint(drop=("exp",))}))
    assert error.error_code == "invalid_token"
    assert "exp" in error.message


# --- through an app, and at import -----------------------------------------------------


def test_refusal_is_the_json_envelope_with_a_challenge(auth_on: Callable[..., None]) -> None:
    router = APIRouter()

    @router.get("/me")
    async def me(user: Annotated[User, Depends(user_from_request)]) -> dict[str, str]:
        return {"id": user.id}

    with TestClient(create_function_app("auth-test", [router])) as client:
        response = client.get("/me", headers={"X-Request-ID": "r-1"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"success": False, "error": {
            "code": "unauthorized", "message": "sign in first", "request_id": "r-1"}}
        expired = client.get("/me", headers={"Authorization": f"Bearer {mint({'exp': 1})}"})
        assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"
        client.cookies.set("access_token", mint({"sub": "cookie-user"}))
        assert client.get("/me").json() == {"id": "cookie-user"}


def test_pyjwt_is_not_imported_until_needed() -> None:
    code = "import sys, roleplay.web.auth; assert 'jwt' not in sys.modules, 'jwt imported eagerly'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["layers/roleplay/python", "."])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=str(Path(__file__).resolve().parents[2]))


# --- reserved subjects and the admin claim (issue 13) -------------------------------


@pytest.mark.parametrize("subject", ["anonymous", "anon:a:x", "anon:c:abc"])
def test_a_subject_that_would_pass_for_an_anonymous_client_is_401(
        auth_on: Callable[..., None], subject: str) -> None:
    failure = refused(request({"Authorization": f"Bearer {mint({'sub': subject})}"}))
    assert failure.error_code == "invalid_token" and "reserved" in failure.message


@pytest.mark.parametrize(("claims", "admin"), [
    ({}, False),
    ({"admin": True}, True),
    ({"admin": "true"}, False),
    ({"admin": 1}, False),
    ({"roles": ["editor", "admin"]}, True),
    ({"roles": ["editor"]}, False),
    ({"roles": "admin"}, False),
])
def test_the_admin_claim_makes_an_admin(auth_on: Callable[..., None], claims: dict[str, Any],
                                        admin: bool) -> None:
    user = who(request({"Authorization": f"Bearer {mint(claims)}"}))
    assert user.authenticated and user.is_admin is admin


def test_identity_imports_nothing_of_sign_in() -> None:
    """The lower module never imports the higher one: no auth <-> identity circle."""
    code = ("import sys, roleplay.core.identity; "
            "print(sorted(m for m in sys.modules if m.startswith('roleplay.')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["layers/roleplay/python", "."])}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=env,
                            cwd=str(Path(__file__).resolve().parents[2])).stdout
    assert loaded.strip() == "['roleplay.core', 'roleplay.core.identity']"

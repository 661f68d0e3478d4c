"""The concurrent-user cap and sign-in, through the HTTP API, against real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.sign_in import SECRET, bearer, mint


def _chat(client: TestClient, session_id: str, **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/api/chat", headers=headers, json={
        "session_id": session_id, "messages": [{"role": "user", "content": "안녕"}]})


@pytest.fixture
def browsers() -> Iterator[Callable[[], TestClient]]:
    """Opens anonymous clients that each hold their own cookie (distinct users, all from
    the same address)."""
    from local_runner.app import build_app

    app = build_app()
    opened: list[TestClient] = []

    def open_browser() -> TestClient:
        browser = TestClient(app).__enter__()
        opened.append(browser)
        browser.get("/api/chat/sessions/first-contact")  # any call: the cookie comes back
        assert browser.cookies.get("rp_anon")
        return browser

    yield open_browser
    for browser in opened:
        browser.__exit__(None, None, None)


def test_the_cap_refuses_new_users_with_retry_after_and_admits_existing_ones(
        fake_upstream, settings_env, browsers: Callable[[], TestClient]) -> None:
    settings_env(MAX_CONCURRENT_USERS="2")
    alice, bob, carol = browsers(), browsers(), browsers()
    assert _chat(alice, "s-a").status_code == 200
    assert _chat(bob, "s-b").status_code == 200
    refused = _chat(carol, "s-c")
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json() == {"success": False, "error": {
        "code": "too_many_users",
        "message": "최대 동시 접속자 수(2명)에 도달했습니다. 잠시 후 다시 시도해주세요.",
        "details": refused.json()["error"]["details"],
        "request_id": refused.headers["X-Request-ID"]}}
    assert _chat(alice, "s-a").status_code == 200, "an active user is never turned away"
    assert _chat(alice, "s-another").status_code == 200, "nor when they open another session"


def test_ending_a_session_frees_its_place_at_once(fake_upstream, settings_env,
                                                 browsers: Callable[[], TestClient]) -> None:
    settings_env(MAX_CONCURRENT_USERS="1")
    first, second = browsers(), browsers()
    assert _chat(first, "s-first").status_code == 200
    assert _chat(second, "s-second").status_code == 503
    assert first.delete("/api/chat/sessions/s-first").status_code == 200
    assert _chat(second, "s-second").status_code == 200


def test_the_release_endpoint_frees_a_place(fake_upstream, settings_env,
                                           browsers: Callable[[], TestClient]) -> None:
    settings_env(MAX_CONCURRENT_USERS="1")
    first, second = browsers(), browsers()
    assert _chat(first, "s-one").status_code == 200
    released = first.post("/api/chat/release", json={})
    assert released.json() == {"success": True, "data": {"released": True}}
    assert _chat(second, "s-two").status_code == 200
    assert second.post("/api/chat/release", json={"session_id": "s-two"}).json()["data"] == {
        "released": True}, "a session_id is still accepted (and ignored)"


def test_reading_a_session_or_characters_is_not_capped(fake_upstream, settings_env,
                                                      client: TestClient) -> None:
    settings_env(MAX_CONCURRENT_USERS="1")
    assert _chat(client, "s-holder").status_code == 200
    assert client.get("/api/characters").status_code == 200
    assert client.get("/api/chat/sessions/s-holder").status_code == 200
    assert client.get("/api/tts/voices").status_code == 200


def test_redis_down_is_503_and_nobody_is_admitted(fake_upstream, settings_env) -> None:
    from local_runner.app import build_app
    from tests.support.upstream_server import closed_port_url

    settings_env(REDIS_URL=closed_port_url().replace("http", "redis"))
    with TestClient(build_app()) as client:
        response = _chat(client, "s-down")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "redis_unavailable"
    assert fake_upstream.chat_prompts == []


def test_a_valid_bearer_token_names_the_user(fake_upstream, auth_on, client: TestClient) -> None:
    response = _chat(client, "s-bearer", **bearer("alice"))
    assert response.status_code == 200
    character = client.post("/api/characters", json={"name": "민지"}, headers=bearer("alice"))
    assert character.json()["data"]["owner"] == "alice"


def test_a_valid_cookie_names_the_user(fake_upstream, auth_on, client: TestClient) -> None:
    client.cookies.set("access_token", mint({"sub": "bob"}))
    try:
        created = client.post("/api/characters", json={"name": "철수"})
    finally:
        client.cookies.clear()
    assert created.status_code == 201
    assert created.json()["data"]["owner"] == "bob"


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "unauthorized"),
    (bearer("alice", exp=int(time.time()) - 3600), "token_expired"),
    ({"Authorization": f"Bearer {mint({'sub': 'alice'}, key='not-the-secret-but-as-long-as-it')}"},
     "invalid_token"),
    ({"Authorization": f"Bearer {mint({'sub': 'alice'})[:-4]}abcd"}, "invalid_token"),
    ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
])
def test_missing_expired_or_tampered_tokens_are_401(fake_upstream, auth_on, client: TestClient,
                                                   headers: dict[str, str], code: str) -> None:
    response = _chat(client, "s-denied", **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert fake_upstream.chat_prompts == []


def test_another_users_session_is_not_found(fake_upstream, auth_on, client: TestClient) -> None:
    assert _chat(client, "s-alice", **bearer("alice")).status_code == 200
    mallory = bearer("mallory")
    assert client.get("/api/chat/sessions/s-alice", headers=mallory).status_code == 404
    assert client.delete("/api/chat/sessions/s-alice", headers=mallory).status_code == 404
    assert _chat(client, "s-alice", **mallory).status_code == 200, "the same id is her own session"
    alices = client.get("/api/chat/sessions/s-alice", headers=bearer("alice")).json()["data"]
    assert alices["message_count"] == 2, "mallory's turn went to her own session, not alice's"


def test_another_users_character_cannot_be_changed(auth_on, client: TestClient) -> None:
    character = client.post("/api/characters", json={"name": "민지"},
                            headers=bearer("alice")).json()["data"]
    path = f"/api/characters/{character['id']}"
    mallory = bearer("mallory")
    assert client.get(path, headers=mallory).status_code == 200, "characters are public to read"
    assert client.patch(path, json={"name": "x"}, headers=mallory).status_code == 403
    assert client.delete(path, headers=mallory).status_code == 403
    assert client.patch(path, json={"name": "민지2"}, headers=bearer("alice")).status_code == 200


def test_a_signed_in_user_takes_one_place_for_all_their_sessions(
        fake_upstream, auth_on, settings_env, client: TestClient) -> None:
    settings_env(MAX_CONCURRENT_USERS="1")
    assert _chat(client, "s-one", **bearer("alice")).status_code == 200
    assert _chat(client, "s-two", **bearer("alice")).status_code == 200
    assert _chat(client, "s-three", **bearer("bob")).status_code == 503
    assert client.post("/api/chat/release", headers=bearer("alice")).json()["data"]["released"]
    assert _chat(client, "s-three", **bearer("bob")).status_code == 200


@pytest.mark.parametrize("store", ["secretsmanager", "ssm"])
def test_the_deployed_key_is_read_from_aws_by_its_arn(aws, settings_env, client: TestClient,
                                                     store: str) -> None:
    import boto3

    from roleplay.web.jwt_key import _fetched

    if store == "secretsmanager":
        arn = boto3.client("secretsmanager").create_secret(Name="jwt", SecretString=SECRET)["ARN"]
    else:
        boto3.client("ssm").put_parameter(Name="/server-b/jwt", Value=SECRET, Type="SecureString")
        arn = "arn:aws:ssm:us-east-1:123456789012:parameter/server-b/jwt"
    settings_env(JWT_SECRET_ARN=arn)
    _fetched.cache_clear()
    try:
        created = client.post("/api/characters", json={"name": "민지"}, headers=bearer("alice"))
        assert created.status_code == 201 and created.json()["data"]["owner"] == "alice"
        assert client.post("/api/characters", json={"name": "x"}).status_code == 401
    finally:
        _fetched.cache_clear()


def test_an_unreadable_key_is_503_never_anonymous(aws, settings_env, client: TestClient) -> None:
    from roleplay.web.jwt_key import _fetched

    settings_env(JWT_SECRET_ARN="arn:aws:secretsmanager:us-east-1:123456789012:secret:missing")
    _fetched.cache_clear()
    response = client.post("/api/characters", json={"name": "x"}, headers=bearer("alice"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"

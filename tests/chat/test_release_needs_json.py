"""`POST /api/chat/release` acts on the caller's cookie alone, so it takes only what a page on
another site cannot send without a CORS preflight: a JSON content type or an Authorization
header. On main a cross-site form (or a `no-cors` fetch) freed the victim's place.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from roleplay.core.redis_keys import redis_keys
from tests.support.fake_llm import FakeLLM
from tests.support.sign_in import SECRET, bearer

EVIL = "https://evil.example"


def _holding_a_place(client: TestClient, sync_redis: redis.Redis, **headers: str) -> str:
    """A turn (the caller takes a place under the cap); answers the place's user id."""
    answer = client.post("/api/chat", headers=headers, json={
        "tts_enabled": False, "messages": [{"role": "user", "content": "안녕"}]})
    assert answer.status_code == 200, answer.text
    holders = sync_redis.zrange(redis_keys().active_users, 0, -1)
    assert len(holders) == 1
    return str(holders[0])


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b""),
    ("application/x-www-form-urlencoded", b"session_id=s-1"),
    ("multipart/form-data; boundary=x", b"--x--\r\n"),
    ("text/plain", b'{"session_id": "s-1"}'),
    (None, b""),
])
def test_what_a_cross_site_form_can_send_is_415_and_frees_nothing(
        fake_upstream: FakeLLM, client: TestClient, sync_redis: redis.Redis,
        content_type: str | None, body: bytes) -> None:
    client.get("/api/chat/sessions/cookie-first")  # the browser holds its cookie from here on
    holder = _holding_a_place(client, sync_redis)
    headers = {"Origin": EVIL} | ({"Content-Type": content_type} if content_type else {})
    refused = client.post("/api/chat/release", content=body, headers=headers)
    assert refused.status_code == 415, refused.text
    assert refused.json()["error"]["code"] == "json_required"
    assert "access-control-allow-origin" not in refused.headers
    assert sync_redis.zrange(redis_keys().active_users, 0, -1) == [holder], "the place is kept"


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b"{}"),
    ("application/json", b""),
    ("application/json; charset=utf-8", b'{"session_id": "s-1"}'),
    ("application/merge-patch+json", b"{}"),
])
def test_a_json_request_releases_the_place(
        fake_upstream: FakeLLM, client: TestClient, sync_redis: redis.Redis,
        content_type: str, body: bytes) -> None:
    client.get("/api/chat/sessions/cookie-first")
    _holding_a_place(client, sync_redis)
    released = client.post("/api/chat/release", content=body, headers={"Content-Type": content_type})
    assert released.status_code == 200, released.text
    assert released.json() == {"success": True, "data": {"released": True}}
    assert sync_redis.zcard(redis_keys().active_users) == 0


def test_a_bearer_token_alone_releases_the_place(
        fake_upstream: FakeLLM, settings_env: Callable[..., None], client: TestClient,
        sync_redis: redis.Redis) -> None:
    """`curl -X POST -H 'Authorization: Bearer …'`: a header no cross-site form can add."""
    settings_env(JWT_SECRET=SECRET)
    _holding_a_place(client, sync_redis, **bearer("alice"))
    released = client.post("/api/chat/release", headers=bearer("alice"))
    assert released.status_code == 200 and released.json()["data"]["released"] is True
    assert sync_redis.zcard(redis_keys().active_users) == 0


def test_a_page_on_another_site_cannot_send_the_json_request(client: TestClient) -> None:
    """What makes the JSON content type enough: a browser asks first (a preflight), and an
    origin not in CORS_ALLOW_ORIGINS is refused there, so the request is never sent."""
    preflight = client.options("/api/chat/release", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers

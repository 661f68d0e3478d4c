"""Health tells anyone whether things work, and only an admin where they are, never with
credentials: URLs are redacted (userinfo, secret query parameters) even for an admin."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from roleplay.core.url_redaction import redact_url, redact_urls_in
from tests.support.sign_in import SECRET, bearer
from tests.support.upstream_server import closed_port_url


@pytest.mark.parametrize(("url", "shown"), [
    ("rediss://default:s3cret@cache.example.com:6379/0", "rediss://***@cache.example.com:6379/0"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0?password=s3cret&ssl=true",
     "redis://127.0.0.1:6379/0?password=***&ssl=true"),
    ("http://gpu.internal:8000/v1?token=abc&api_key=def&key=ghi",
     "http://gpu.internal:8000/v1?token=***&api_key=***&key=***"),
    ("https://user@tts.example.com:9880", "https://***@tts.example.com:9880"),
    ("http://10.0.1.20:9880", "http://10.0.1.20:9880"),
    ("embedded eSpeak NG", "embedded eSpeak NG"),
])
def test_redact_url_masks_userinfo_and_secret_parameters(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_in_error_text() -> None:
    text = "ConnectError: cannot reach http://u:pw@host:1/x?key=k (refused)"
    assert redact_urls_in(text) == "ConnectError: cannot reach http://***@host:1/x?key=*** (refused)"


def _configure(settings_env: Callable[..., None], redis_url: str) -> None:
    settings_env(JWT_SECRET=SECRET, JWT_COOKIE_NAME="access_token", JWT_AUDIENCE="", JWT_ISSUER="",
                 REDIS_URL=redis_url + "?password=redis-pw",
                 LLM_BASE_URL=closed_port_url().replace("http://", "http://llmuser:llm-pw@"),
                 TTS_BASE_URL=closed_port_url() + "/?token=tts-token")


def test_anonymous_caller_gets_status_only(settings_env: Callable[..., None], redis_url: str,
                                           client: TestClient) -> None:
    _configure(settings_env, redis_url)
    for headers in ({}, {"Authorization": "Bearer not-a-token"},
                    bearer()):  # signed in, not an admin
        response = client.get("/api/health", headers=headers)
        assert response.status_code == 200
        data = response.json()["data"]
        assert {key: data[key] for key in ("status", "checks")} == {"status": "degraded", "checks": {
            "redis": {"status": "ok"}, "llm": {"status": "down"}, "tts": {"status": "down"}}}
        assert set(data) <= {"status", "checks", "breakers", "gpu"}  # states only, no address
        assert "://" not in response.text


@pytest.mark.parametrize("claims", [{"admin": True}, {"roles": ["user", "admin"]}])
def test_admin_sees_targets_with_credentials_redacted(settings_env: Callable[..., None],
                                                      redis_url: str, client: TestClient,
                                                      claims: dict[str, object]) -> None:
    _configure(settings_env, redis_url)
    response = client.get("/api/health", headers=bearer(**claims))
    assert response.status_code == 200
    checks = response.json()["data"]["checks"]
    assert checks["redis"]["target"].endswith("?password=***")
    assert checks["llm"]["target"].startswith("http://***@127.0.0.1:")
    assert checks["tts"]["target"].endswith("token=***")
    assert checks["llm"]["status"] == "unreachable" and checks["llm"]["error"]
    for secret in ("redis-pw", "llm-pw", "llmuser", "tts-token"):
        assert secret not in response.text


def test_admin_claim_must_be_true_not_truthy(settings_env: Callable[..., None], redis_url: str,
                                             client: TestClient) -> None:
    _configure(settings_env, redis_url)
    for claims in ({"admin": "yes"}, {"roles": "admin"}, {"roles": ["administrator"]}):
        response = client.get("/api/health", headers=bearer(**claims))
        assert "target" not in json.dumps(response.json()), claims


def test_redis_down_answer_shows_no_url_to_anyone(settings_env: Callable[..., None],
                                                  client: TestClient) -> None:
    settings_env(REDIS_URL="redis://:pw@127.0.0.1:1/0?password=pw2")
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"]["redis"] == {"status": "down"}
    assert "://" not in response.text and "pw" not in response.text

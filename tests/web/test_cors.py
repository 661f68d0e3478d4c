"""CORS: listed origins may call every route with credentials; others get no CORS header."""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from roleplay.core.settings import ConfigurationError, get_settings
from tests.support.lambda_events import http_api_event, invoke_raw

APP = "http://localhost:3000"
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, authorization"}


@pytest.fixture
def allow_app_origin(settings_env: Callable[..., None]) -> None:
    settings_env(CORS_ALLOW_ORIGINS=f"{APP}, https://app.example.com/")


@pytest.mark.parametrize("path", ["/api/chat", "/api/characters/abc", "/api/tts", "/api/health",
                                  "/no/such/route"])
def test_preflight_from_listed_origin_is_answered_on_every_route(
        allow_app_origin: None, client: TestClient, path: str) -> None:
    response = client.options(path, headers={"Origin": APP, **PREFLIGHT})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type, authorization"
    assert "Origin" in response.headers["vary"]


def test_listed_origin_gets_its_name_and_credentials_on_answers_and_errors(
        allow_app_origin: None, client: TestClient) -> None:
    ok = client.get("/api/tts/voices", headers={"Origin": "https://app.example.com"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "Retry-After" in ok.headers["access-control-expose-headers"]
    bad = client.post("/api/chat", json={"temperature": 9}, headers={"Origin": APP})
    assert bad.status_code == 422
    assert bad.headers["access-control-allow-origin"] == APP


def test_unlisted_origin_gets_no_cors_headers(allow_app_origin: None, client: TestClient) -> None:
    evil = "https://evil.example"
    preflight = client.options("/api/chat", headers={"Origin": evil, **PREFLIGHT})
    assert preflight.status_code == 403
    assert preflight.json()["error"]["code"] == "cors_origin_not_allowed"
    answer = client.get("/api/tts/voices", headers={"Origin": evil})
    for response in (preflight, answer):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_by_default_only_the_same_origin_is_served(client: TestClient) -> None:
    preflight = client.options("/api/chat", headers={"Origin": APP, **PREFLIGHT})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert client.get("/api/tts/voices").status_code == 200


def test_wildcard_admits_everyone_without_credentials(
        settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(CORS_ALLOW_ORIGINS='["*"]')
    response = client.get("/api/tts/voices", headers={"Origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(("value", "origins"), [
    ("", []), ("http://a.example,http://b.example:8080", ["http://a.example", "http://b.example:8080"]),
    ('["http://a.example/"]', ["http://a.example"]),
])
def test_origins_are_read_comma_separated_or_as_json(
        settings_env: Callable[..., None], value: str, origins: list[str]) -> None:
    settings_env(CORS_ALLOW_ORIGINS=value)
    assert get_settings().cors_allow_origins == origins


@pytest.mark.parametrize("value", ['["http://a.example"', "localhost:3000", "http://a.example/app"])
def test_an_unreadable_origin_list_names_the_variable(settings_env: Callable[..., None],
                                                      value: str) -> None:
    settings_env(CORS_ALLOW_ORIGINS=value)
    with pytest.raises(ConfigurationError, match="CORS_ALLOW_ORIGINS"):
        get_settings()


def test_a_lambda_function_answers_the_preflight_too(allow_app_origin: None) -> None:
    from functions.chat.app import handler

    event = http_api_event("OPTIONS", "/api/chat", headers={"origin": APP, **{
        name.lower(): value for name, value in PREFLIGHT.items()}})
    result = invoke_raw(handler, event)
    headers = {name.lower(): value for name, value in result["headers"].items()}
    assert result["statusCode"] == 204
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-credentials"] == "true"

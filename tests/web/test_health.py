import time

import redis
from fastapi.testclient import TestClient

from tests.support.upstream_server import closed_port_url, silent_socket


def test_health_is_ok_with_redis_and_no_upstreams_configured(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["success"] is True
    assert body["data"]["status"] == "ok"
    assert body["data"]["checks"]["redis"]["status"] == "ok"
    assert "llm" not in body["data"]["checks"]  # not configured: left out
    assert body["data"]["checks"]["tts"] == {"status": "ok"}  # anonymous: status only


def test_health_reports_a_down_upstream_as_unreachable(settings_env, client: TestClient) -> None:
    settings_env(LLM_BASE_URL=closed_port_url(), TTS_BASE_URL=closed_port_url())
    response = client.get("/api/health")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "degraded"
    assert data["checks"]["llm"]["status"] == "down"
    assert data["checks"]["tts"]["status"] == "down"


def test_health_never_hangs_on_a_silent_upstream(settings_env, client: TestClient) -> None:
    with silent_socket() as url:
        settings_env(LLM_BASE_URL=url, HEALTH_TIMEOUT_S="0.3")
        started = time.monotonic()
        data = client.get("/api/health").json()["data"]
        elapsed = time.monotonic() - started
    assert data["checks"]["llm"]["status"] == "down"
    assert elapsed < 5


def test_health_is_503_when_redis_is_down(settings_env, client: TestClient) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "unhealthy"
    assert body["error"]["details"]["checks"]["redis"]["status"] == "down"


def test_characters_answer_503_not_500_when_redis_is_down(settings_env, client: TestClient) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    response = client.get("/api/characters")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "redis_unavailable"


def test_health_is_down_when_redis_answers_ping_but_refuses_writes(
        settings_env, admin_health, tmp_path) -> None:
    """`redis: ok` means a script ran and wrote: a Redis out of memory (writes refused with
    OOM, PING still PONG) cannot store a turn, so it is not ok."""
    from tests.support.real_redis import RedisServer

    with RedisServer(tmp_path / "redis") as url:
        settings_env(REDIS_URL=url)
        assert admin_health()["success"] is True
        server = redis.Redis.from_url(url)
        server.config_set("maxmemory-policy", "noeviction")
        server.config_set("maxmemory", "1")
        assert server.ping()
        health = admin_health()
        server.close()
    assert health["success"] is False
    redis_check = health["error"]["details"]["checks"]["redis"]
    assert redis_check["status"] == "unreachable" and "OutOfMemoryError" in redis_check["error"]

"""A turn's `model` must be one the upstream serves: against the real llama.cpp server, a
vLLM-shaped and an Ollama-shaped list (tests/llm/test_models.py's documented answers), and
an upstream that is down (only configured names then). Refused names leave nothing in Redis
or in process caches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from roleplay.chat import token_ratio
from roleplay.core.errors import ServiceUnavailable
from roleplay.core.redis_keys import redis_keys
from roleplay.llm import served_models
from tests.llm.test_models import OLLAMA_TAGS
from tests.support.fake_llm import FakeLLM
from tests.support.upstream_server import closed_port_url, serve


def _turn(model: str, session_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"model": model, "tts_enabled": False,
                               "messages": [{"role": "user", "content": "안녕"}]}
    if session_id:
        body["session_id"] = session_id
    return body


def _keys(sync_redis: redis.Redis) -> set[str]:
    return set(sync_redis.scan_iter(match=f"{redis_keys().prefix}*", count=1000))


@pytest.fixture(autouse=True)
def empty_caches() -> None:
    served_models._cache.clear()
    token_ratio._cache.clear()


@pytest.mark.llm
def test_an_unknown_model_is_400_and_stores_nothing(real_llm, client: TestClient,
                                                    sync_redis: redis.Redis) -> None:
    """llama.cpp answers any model name with its one model: on main each name was a turn,
    and a permanent token-ratio field. Here its own /v1/models decides, before any write."""
    alias = real_llm.model_alias  # type: ignore[attr-defined]
    client.get("/api/chat/sessions/none")  # first contact: the anonymous cookie's key exists
    client.get("/api/chat/sessions/none")  # the cookie back: its address's cookie set exists
    before = _keys(sync_redis)
    for n in range(50):
        refused = client.post("/api/chat", json=_turn(f"invented-{n}", session_id=f"s-{n}"))
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "unknown_model"
        assert refused.json()["error"]["details"]["served"] == [alias]
    assert _keys(sync_redis) == before, "no session, slot, token ratio or any other key"
    assert asyncio.run(served_models.is_served(alias)) is True
    assert not token_ratio._cache and len(served_models._cache) == 1


def _listing_upstream(fake: FakeLLM, served: list[str], service: str = "vllm") -> tuple[FastAPI, list[str]]:
    """The fake chat upstream plus a model list in vLLM's or Ollama's shape; records list calls."""
    app = fake.app()
    calls: list[str] = []

    def vllm_models() -> dict[str, object]:
        calls.append("v1/models")
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "vllm",
                                            "max_model_len": 8192} for name in served]}

    def ollama_tags() -> dict[str, object]:
        calls.append("api/tags")
        return {"models": [{**OLLAMA_TAGS["models"][0], "name": name, "model": name}  # type: ignore[index]
                           for name in served]}

    if service == "vllm":
        app.get("/v1/models")(vllm_models)
    else:
        app.get("/api/tags")(ollama_tags)
    return app, calls


def test_many_invented_names_grow_nothing_and_fetch_the_list_rarely(
        settings_env: Callable[..., None], client: TestClient, sync_redis: redis.Redis) -> None:
    fake = FakeLLM()
    app, calls = _listing_upstream(fake, ["gemma-3-27b-it", "gemma-3-4b-it"])
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        assert client.post("/api/chat", json=_turn("gemma-3-4b-it")).status_code == 200
        client.get("/api/chat/sessions/none")  # the cookie back: its address's cookie set exists
        fields = sync_redis.hlen(redis_keys().token_ratios)
        before = _keys(sync_redis)
        answers = [client.post("/api/chat", json=_turn(f"m-{n}")).status_code for n in range(300)]
    assert set(answers) == {400}
    assert _keys(sync_redis) == before
    assert sync_redis.hlen(redis_keys().token_ratios) == fields == 1
    assert len(calls) <= 3, f"the list is refetched at most every few seconds, not per name: {calls}"
    assert len(fake.chat_prompts) == 1


def test_allowed_models_and_the_default_pass_without_asking(
        settings_env: Callable[..., None], client: TestClient) -> None:
    fake = FakeLLM()
    app, calls = _listing_upstream(fake, ["something-else"])
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url, ALLOWED_MODELS="my-lora, other")
        assert client.post("/api/chat", json=_turn("my-lora")).status_code == 200
        assert client.post("/api/chat", json=_turn("gemma-3-27b-it")).status_code == 200
        assert client.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}],
                                              "tts_enabled": False}).status_code == 200
    # Checking the names asked nothing; the one read is the context length's (upstream_limits),
    # from the same cached list, for every model.
    assert calls == ["v1/models"]


def test_ollama_names_and_their_latest_tag(settings_env: Callable[..., None],
                                           client: TestClient) -> None:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/api/tags")
    def tags() -> dict[str, object]:
        calls.append("tags")
        return {"models": [{**OLLAMA_TAGS["models"][0], "name": n, "model": n}  # type: ignore[index]
                           for n in ("gemma3:27b", "llama3:latest")]}

    with serve(app) as url:
        settings_env(LLM_BASE_URL=url, LLM_SERVICE="ollama")

        async def check() -> list[bool | None]:
            return [await served_models.is_served(name)
                    for name in ("gemma3:27b", "llama3", "gemma3", "nope:1b")]

        assert asyncio.run(check()) == [True, True, False, False]
    assert calls == ["tags"]


def test_an_upstream_that_cannot_list_takes_only_configured_names(
        settings_env: Callable[..., None], client: TestClient, sync_redis: redis.Redis) -> None:
    """Not a 400 (the name may well be served) but a 503 until the list can be read; the
    default model goes on to meet the upstream's own 502."""
    settings_env(LLM_BASE_URL=closed_port_url())
    answer = client.post("/api/chat", json=_turn("some-model"))
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_list_unavailable"
    assert "some-model" not in sync_redis.hgetall(redis_keys().token_ratios)
    default = client.post("/api/chat", json=_turn("gemma-3-27b-it"))
    assert default.status_code == 502 and default.json()["error"]["code"] == "upstream_unavailable"


def test_a_model_the_upstream_adds_is_found_within_seconds(
        settings_env: Callable[..., None], client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLLM()
    served = ["gemma-3-27b-it"]
    app, calls = _listing_upstream(fake, served)
    with serve(app) as url:
        settings_env(LLM_BASE_URL=url)
        assert client.post("/api/chat", json=_turn("new-model")).status_code == 400
        served.append("new-model")
        assert client.post("/api/chat", json=_turn("new-model")).status_code == 400, \
            "within MISS_REFRESH_S the list is not asked again"
        monkeypatch.setattr(served_models, "MISS_REFRESH_S", 0.0)
        assert client.post("/api/chat", json=_turn("new-model")).status_code == 200
    assert len(calls) == 2


def test_a_hanging_upstream_is_not_waited_on_for_the_list(
        settings_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.upstream_server import silent_socket

    monkeypatch.setattr(served_models, "CHECK_TIMEOUT_S", 0.2)
    with silent_socket() as url:
        settings_env(LLM_BASE_URL=url, LLM_READ_TIMEOUT_S="30")
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as refused:
            asyncio.run(served_models.checked_model("any-name"))
        assert time.monotonic() - started < 2
        assert refused.value.error_code == "model_list_unavailable"
        assert asyncio.run(served_models.checked_model("gemma-3-27b-it")) == "gemma-3-27b-it"

"""While the upstream's model list cannot be read (its breaker open, down, hanging), a name
that is neither configured nor on a list read before is 503 `model_list_unavailable`.

On main such a name passed the check whenever the list could not be asked: while the
breaker was open the turn met the breaker, but the moment it closed (the list not asked
again for `MISS_REFRESH_S`) an invented name went to the upstream, and an upstream that
answers any name (llama.cpp) generated and stored a turn with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from roleplay.llm import served_models
from roleplay.ops import failover
from tests.support.fake_llm import FakeLLM
from tests.support.upstream_server import serve

COOLOFF_S = 1.5


@dataclass
class Upstream:
    """The scripted LLM plus vLLM's model list; `down` answers 503 to everything, as a
    vLLM that is restarting does."""

    fake: FakeLLM
    served: tuple[str, ...] = ("gemma-3-27b-it", "gemma-3-4b-it")
    down: bool = False

    def app(self) -> FastAPI:
        app = self.fake.app()

        @app.get("/v1/models")
        def models() -> dict[str, object]:
            return {"object": "list", "data": [{"id": name, "object": "model"} for name in self.served]}

        @app.middleware("http")
        async def maybe_down(request: Request, call_next: Callable[..., object]) -> Response:
            if self.down:
                return JSONResponse({"object": "error", "message": "restarting"}, status_code=503)
            return await call_next(request)  # type: ignore[misc, no-any-return]

        return app


@pytest.fixture
def upstream(settings_env: Callable[..., None]) -> Iterator[Upstream]:
    served_models._cache.clear()
    failover._cache.clear()
    scripted = Upstream(FakeLLM())
    with serve(scripted.app()) as url:
        settings_env(LLM_BASE_URL=url, BREAKER_FAILURES="2", BREAKER_COOLOFF_S=str(COOLOFF_S),
                     ALLOWED_MODELS="my-lora")
        yield scripted
    served_models._cache.clear()
    failover._cache.clear()


def _turn(client: TestClient, model: str | None) -> tuple[int, str]:
    body: dict[str, object] = {"tts_enabled": False, "messages": [{"role": "user", "content": "안녕"}]}
    if model is not None:
        body["model"] = model
    answer = client.post("/api/chat", json=body)
    return answer.status_code, answer.json().get("error", {}).get("code", "")


def _open_the_breaker(upstream: Upstream, client: TestClient) -> float:
    """The upstream goes down and turns fail until its breaker opens; it comes back at
    once, but the breaker stays open for its cool-off. Answers when it opened."""
    upstream.down = True
    for _ in range(3):
        status, code = _turn(client, None)
        if code == "upstream_circuit_open":
            break
        assert status == 502, code
    upstream.down = False
    opened = time.monotonic()
    assert _turn(client, None) == (502, "upstream_circuit_open")
    return opened


def _after_the_cooloff(opened: float) -> None:
    time.sleep(max(0.0, opened + COOLOFF_S + failover.CACHE_S + 0.2 - time.monotonic()))


def test_an_unknown_name_is_503_while_the_breaker_is_open_and_never_reaches_the_upstream(
        upstream: Upstream, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(served_models, "MISS_REFRESH_S", 30.0)
    opened = _open_the_breaker(upstream, client)
    prompts = len(upstream.fake.chat_prompts)
    answer = client.post("/api/chat", json={"model": "invented-1", "tts_enabled": False,
                                            "messages": [{"role": "user", "content": "안녕"}]})
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_list_unavailable"
    assert error["details"]["model"] == "invented-1"
    assert int(answer.headers["Retry-After"]) >= 1

    _after_the_cooloff(opened)
    assert _turn(client, None) == (200, ""), "the breaker has closed: the upstream serves"
    assert _turn(client, "invented-2") == (503, "model_list_unavailable"), \
        "the list is not asked again yet: the name is still not known to be served"
    assert len(upstream.fake.chat_prompts) == prompts + 1, "only the default model's turn"

    monkeypatch.setattr(served_models, "MISS_REFRESH_S", 0.0)
    assert _turn(client, "invented-2")[0] == 400, "with the list read again: unknown_model"


def test_configured_names_and_names_on_the_last_list_still_pass_while_it_cannot_be_read(
        upstream: Upstream, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEFAULT_MODEL and ALLOWED_MODELS never ask; a name the last list held is not unknown.
    While the breaker is open they meet the breaker (502), not the model check (503)."""
    assert _turn(client, "gemma-3-4b-it") == (200, "")
    monkeypatch.setattr(served_models, "TTL_S", 0.0)  # the list is stale: every check rereads it
    monkeypatch.setattr(served_models, "MISS_REFRESH_S", 0.0)
    opened = _open_the_breaker(upstream, client)
    for model in ("gemma-3-27b-it", "my-lora", "gemma-3-4b-it"):
        assert _turn(client, model) == (502, "upstream_circuit_open"), model
    assert _turn(client, "invented") == (503, "model_list_unavailable")
    _after_the_cooloff(opened)
    for model in ("gemma-3-27b-it", "my-lora", "gemma-3-4b-it"):
        assert _turn(client, model) == (200, ""), model


def test_an_upstream_down_before_any_list_accepts_only_the_configured_names(
        upstream: Upstream, client: TestClient) -> None:
    """Nothing read yet and the upstream failing (a 503): DEFAULT_MODEL and ALLOWED_MODELS
    go on to meet the upstream, any other name is refused without reaching it."""
    upstream.down = True
    assert _turn(client, "not-listed") == (503, "model_list_unavailable")
    assert _turn(client, "my-lora")[0] == 502, "the upstream's own failure (or its breaker)"
    assert upstream.fake.chat_prompts == []


def test_an_upstream_without_a_list_leaves_the_name_to_the_upstream(
        settings_env: Callable[..., None], client: TestClient) -> None:
    """A list path answered with a 4xx (this scripted upstream has none) is no failure that
    passes: there is no list to wait for, so the upstream decides, as before."""
    served_models._cache.clear()
    fake = FakeLLM()
    with serve(fake.app()) as url:
        settings_env(LLM_BASE_URL=url)
        assert _turn(client, "whatever-it-serves") == (200, "")
    served_models._cache.clear()

"""The LLM's circuit breaker is about the upstream, not about one user (issue 29, finding 6).

One user's requests that time out (a huge `max_tokens`, a long prompt) or that fill our
own connection pool never pause the upstream for everyone; timeouts from several users,
and an upstream that cannot be reached or answers 502/503, still open it. An open
breaker stays open until its time is up, even when a request that was sent while an
instance's cache still said closed succeeds afterwards. Real Redis, real HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from roleplay.core.http_pool import pooled_http
from tests.support.fake_llm import FakeLLM
from tests.support.sign_in import bearer
from tests.support.upstream_server import closed_port_url, serve


class ScriptedUpstream:
    """Answers by the last message: `slow` sleeps past the read timeout, `fail` is a 503,
    `held` waits on `gate`; anything else answers at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.held_arrived = threading.Event()
        self.requests = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> JSONResponse:
            self.requests += 1
            said = (await request.json())["messages"][-1]["content"]
            if said == "slow":
                await asyncio.sleep(1.5)
            elif said == "fail":
                return JSONResponse({"error": {"message": "engine overloaded"}}, status_code=503)
            elif said == "held":
                self.held_arrived.set()
                await asyncio.to_thread(self.gate.wait, 10)
            return JSONResponse({"model": "m", "choices": [{"message": {
                "role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 2}})

        return app


@pytest.fixture
def scripted(auth_on: Callable[..., None]) -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    with serve(upstream.app()) as url:
        auth_on(LLM_BASE_URL=url, LLM_READ_TIMEOUT_S="0.4")
        yield upstream


def _say(client: TestClient, user: str, text: str, **extra: Any) -> Any:
    """The answer (TestClient's own httpx Response type)."""
    return client.post("/api/chat", headers=bearer(user), json={
        "tts_enabled": False, "messages": [{"role": "user", "content": text}], **extra})


def _breaker(client: TestClient) -> str:
    breakers: dict[str, str] = client.get("/api/health").json()["data"]["breakers"]
    return breakers["llm[0]"]


def test_one_users_timeouts_never_open_the_breaker_for_another_user(
        scripted: ScriptedUpstream, client: TestClient) -> None:
    """Five turns of one user that time out (504) opened the shared breaker before: every
    user got 502 upstream_circuit_open for the whole cool-off."""
    for _ in range(6):
        timed_out = _say(client, "greedy", "slow", max_tokens=1024)
        assert timed_out.status_code == 504, timed_out.text
    assert _breaker(client) == "closed"
    other = _say(client, "bystander", "hello")
    assert other.status_code == 200, other.text
    assert _say(client, "greedy", "hello").status_code == 200, "the upstream was never paused"


def test_timeouts_from_several_users_open_the_breaker(
        scripted: ScriptedUpstream, client: TestClient, settings_env: Callable[..., None]) -> None:
    settings_env(BREAKER_FAILURES="4", BREAKER_MIN_USERS="2")
    for n in range(4):
        assert _say(client, f"user-{n % 2}", "slow").status_code == 504
    paused = _say(client, "user-9", "hello")
    assert paused.status_code == 502, paused.text
    assert paused.json()["error"]["code"] == "upstream_circuit_open"
    assert _breaker(client) == "open"


def test_an_unreachable_upstream_opens_the_breaker_even_for_one_user(
        auth_on: Callable[..., None], client: TestClient) -> None:
    auth_on(LLM_BASE_URL=closed_port_url(), BREAKER_FAILURES="4")
    codes = [_say(client, "alone", "hello").json()["error"]["code"] for _ in range(3)]
    assert codes[0] == "upstream_unavailable" and codes[-1] == "upstream_circuit_open", codes
    paused = _say(client, "someone-else", "hello")
    assert paused.json()["error"]["code"] == "upstream_circuit_open", paused.text


def test_an_upstream_answering_503_opens_the_breaker_even_for_one_user(
        scripted: ScriptedUpstream, client: TestClient, settings_env: Callable[..., None]) -> None:
    settings_env(BREAKER_FAILURES="4")
    for _ in range(2):
        assert _say(client, "alone", "fail").status_code == 502
    paused = _say(client, "someone-else", "hello")
    assert paused.json()["error"]["code"] == "upstream_circuit_open", paused.text
    assert scripted.requests == 4, "an open breaker sends nothing upstream"


def test_a_success_seen_while_the_cache_said_closed_never_closes_an_open_breaker(
        scripted: ScriptedUpstream, client: TestClient, settings_env: Callable[..., None]) -> None:
    """A turn sent while the breaker was still closed (and cached so) succeeds after the
    breaker opened: before, its success erased the open state in Redis."""
    settings_env(BREAKER_FAILURES="3", BREAKER_COOLOFF_S="30", LLM_READ_TIMEOUT_S="20")
    assert _say(client, "user-a", "fail").status_code == 502  # two failures: tried, retried
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_say, client, "user-b", "held")
        assert scripted.held_arrived.wait(10)
        assert _say(client, "user-a", "fail").status_code == 502  # the third opens it
        assert _breaker(client) == "open"
        scripted.gate.set()
        assert in_flight.result().status_code == 200
    assert _breaker(client) == "open"
    paused = _say(client, "user-c", "hello")
    assert paused.json()["error"]["code"] == "upstream_circuit_open", paused.text


def test_a_full_connection_pool_never_opens_the_breaker(
        auth_on: Callable[..., None], client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """One user holding every pooled connection (here the pool has one) makes others wait
    for a connection and give up: our own bound, not the upstream failing."""
    llm = FakeLLM(reply=" ".join(f"w{n}" for n in range(30)), token_delay_s=0.1)
    monkeypatch.setattr("roleplay.llm.client.http_holder", pooled_http(
        lambda s: (s.llm_connect_timeout_s, s.llm_read_timeout_s), max_connections=1, keepalive=1,
        http11=True))
    with serve(llm.app()) as url:
        auth_on(LLM_BASE_URL=url, LLM_CONNECT_TIMEOUT_S="0.2", BREAKER_FAILURES="2")
        with ThreadPoolExecutor(1) as pool:
            hog = pool.submit(_say, client, "hog", "a long one", stream=True)
            while not llm.chat_prompts:
                threading.Event().wait(0.02)
            for _ in range(3):
                crowded = _say(client, "bystander", "hello")
                assert crowded.status_code == 502, crowded.text
                assert crowded.json()["error"]["details"]["cause"] == "pool_exhausted"
            assert hog.result().status_code == 200
        assert _breaker(client) == "closed"
        assert _say(client, "bystander", "hello").status_code == 200

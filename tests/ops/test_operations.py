"""Operating Server B (issue 20): request ids, JSON log lines, metrics (Prometheus and EMF),
per-user quotas, and upstream failover with circuit breakers; real Redis, real HTTP."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from roleplay.ops import quotas
from tests.support.fake_llm import FakeLLM
from tests.support.lambda_events import http_api_event, invoke
from tests.support.sign_in import SECRET, bearer, mint
from tests.support.upstream_server import closed_port_url, serve

HELLO = {"messages": [{"role": "user", "content": "Hello!"}], "tts_enabled": False}


@pytest.fixture
def access_lines(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The request log's JSON lines (its logger writes to stdout, not through the root)."""
    logger = logging.getLogger("roleplay.access")
    logger.addHandler(caplog.handler)
    yield lambda: [json.loads(r.getMessage()) for r in caplog.records if r.name == "roleplay.access"]
    logger.removeHandler(caplog.handler)


class RecordingUpstream:
    """An OpenAI-compatible upstream that records headers and can be switched down (503)."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.down = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> JSONResponse:
            self.headers.append(dict(request.headers))
            if self.down:
                return JSONResponse({"error": {"message": "engine overloaded"}}, status_code=503)
            return JSONResponse({"model": "m", "choices": [{"message": {"role": "assistant",
                                 "content": "Hi!"}, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 40, "completion_tokens": 2}})

        return app


@pytest.fixture
def upstream(settings_env: Callable[..., None]) -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    with serve(recording.app()) as url:
        settings_env(LLM_BASE_URL=url)
        recording.url = url  # type: ignore[attr-defined]
        yield recording


def test_request_id_goes_back_into_errors_and_upstream(client: TestClient,
                                                       upstream: RecordingUpstream) -> None:
    answer = client.post("/api/chat", json=HELLO, headers={"X-Request-ID": "trace-42"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "trace-42"
    # Server A gets a UUID (llama-cpp-python refuses any other X-Request-ID), derived from ours
    assert upstream.headers[-1]["x-request-id"] == str(uuid.uuid5(uuid.NAMESPACE_OID, "trace-42"))
    refused = client.post("/api/chat", json={"messages": "nope"}, headers={"X-Request-ID": "trace-43"})
    assert refused.json()["error"]["request_id"] == "trace-43" == refused.headers["x-request-id"]


def test_an_insane_request_id_is_replaced(client: TestClient) -> None:
    answer = client.get("/api/health", headers={"X-Request-ID": 'x" injected\tline'})
    assert answer.headers["x-request-id"] != 'x" injected\tline'
    assert uuid.UUID(answer.headers["x-request-id"])


def test_one_json_line_per_request_with_the_turn_facts(client: TestClient, upstream: RecordingUpstream,
                                                       access_lines: Callable[[], list[dict[str, Any]]]
                                                       ) -> None:
    answer = client.post("/api/chat", json={**HELLO, "session_id": "s-log"},
                         headers={"X-Request-ID": "log-1"})
    assert answer.status_code == 200
    line = next(line for line in access_lines() if line["request_id"] == "log-1")
    assert line["route"] == "/api/chat" and line["status"] == 200 and line["method"] == "POST"
    assert line["session"] == "s-log" and line["prompt_tokens"] == 40 and line["completion_tokens"] == 2
    assert line["duration_ms"] > 0 and line["summary_scheduled"] is False
    assert line["model"] == answer.json()["data"]["model"]
    assert len(line["user"]) == 16 and line["user"] != "anonymous"
    client.post("/api/chat", json={"messages": []}, headers={"X-Request-ID": "log-2"})
    failed = next(line for line in access_lines() if line["request_id"] == "log-2")
    assert failed["status"] == 400 and failed["error_code"] == "empty_conversation"


def test_logs_hold_no_content_or_secret_unless_asked(client: TestClient, upstream: RecordingUpstream,
                                                     settings_env: Callable[..., None],
                                                     access_lines: Callable[[], list[dict[str, Any]]],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings_env(JWT_SECRET=SECRET)
    token = mint({"sub": "alice"})
    said = {"messages": [{"role": "user", "content": "my secret plan is PINEAPPLE"}], "tts_enabled": False}
    signed = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/chat", json=said, headers=signed).status_code == 200
    logged = json.dumps(access_lines()) + capsys.readouterr().out
    assert "PINEAPPLE" not in logged and token not in logged and SECRET not in logged
    assert "alice" not in logged
    settings_env(LOG_CONTENT="1")
    client.post("/api/chat", json=said, headers=signed)
    assert "PINEAPPLE" in json.dumps(access_lines())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_histograms_move_after_a_turn(client: TestClient, upstream: RecordingUpstream) -> None:
    client.post("/api/chat", json=HELLO)  # the first turn also reads the model list (its context)
    before = _samples(client.get("/metrics").text)
    assert client.post("/api/chat", json=HELLO).status_code == 200
    after = _samples(client.get("/metrics").text)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("serverb_turn_seconds_count") == 1
    assert moved("serverb_turns_total") == 1
    assert moved("serverb_upstream_seconds_count", upstream="LLM upstream (OpenAI-compatible)") == 1
    assert moved("serverb_redis_seconds_count") >= 1
    assert moved("serverb_admissions_total", result="admitted") == 1
    assert moved("serverb_requests_total", route="/api/chat", status="200") == 1
    assert ("serverb_active_users", ()) in after


def test_metrics_are_not_public_with_sign_in_on(client: TestClient,
                                                settings_env: Callable[..., None]) -> None:
    settings_env(JWT_SECRET=SECRET)
    assert client.get("/metrics").status_code == 403
    settings_env(METRICS_TOKEN="scrape-me")
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200 and "serverb_turns_total" in ok.text


def test_lambda_writes_emf_lines_and_marks_the_cold_start(
        upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "serverb-chat")
    from functions.chat.app import handler
    from roleplay.ops import access_log

    monkeypatch.setattr(access_log, "_cold_start", True)
    status, _ = invoke(handler, http_api_event("POST", "/api/chat", body=HELLO))
    assert status == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    metrics = {m["Name"] for doc in emf for group in doc["_aws"]["CloudWatchMetrics"]
               for m in group["Metrics"]}
    assert {"serverb_turn_seconds", "serverb_turns_total", "serverb_upstream_seconds"} <= metrics
    assert all(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ServerB" for doc in emf)
    access = next(line for line in lines if line.get("route") == "/api/chat" and "_aws" not in line)
    assert access["request_id"] == "req-1" and access["cold_start"] is True


def _minutes_later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(quotas.time, "time", lambda: real() + seconds)


def test_requests_per_minute_quota_refuses_then_resets(
        client: TestClient, upstream: RecordingUpstream, settings_env: Callable[..., None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings_env(USER_RPM="2")
    client.get("/api/users/me/persona")  # the anonymous cookie, as a page gets it on first contact
    assert [client.post("/api/chat", json=HELLO).status_code for _ in range(2)] == [200, 200]
    refused = client.post("/api/chat", json=HELLO)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.json()["error"]["details"]["quota"] == "USER_RPM"
    _minutes_later(monkeypatch, 61)
    assert client.post("/api/chat", json=HELLO).status_code == 200


def test_tokens_per_day_quota_counts_what_the_upstream_reports(
        client: TestClient, upstream: RecordingUpstream, settings_env: Callable[..., None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings_env(USER_TOKENS_PER_DAY="50")
    client.get("/api/users/me/persona")  # the anonymous cookie, as a page gets it on first contact
    assert client.post("/api/chat", json=HELLO).status_code == 200  # 42 tokens
    assert client.post("/api/chat", json=HELLO).status_code == 200  # 84: over from now on
    refused = client.post("/api/chat", json=HELLO)
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["quota"] == "USER_TOKENS_PER_DAY"
    _minutes_later(monkeypatch, 86400)
    assert client.post("/api/chat", json=HELLO).status_code == 200


def test_speech_seconds_per_day_quota(client: TestClient, settings_env: Callable[..., None],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    settings_env(USER_TTS_SECONDS_PER_DAY="0.5")
    client.get("/api/users/me/persona")  # the anonymous cookie, as a page gets it on first contact
    assert client.post("/api/tts", json={"text": "Hello there, how are you today?"}).status_code == 200
    refused = client.post("/api/tts", json={"text": "Again."})
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["quota"] == "USER_TTS_SECONDS_PER_DAY"
    _minutes_later(monkeypatch, 86400)
    assert client.post("/api/tts", json={"text": "Again."}).status_code == 200


def test_an_admin_is_exempt_from_quotas(client: TestClient, upstream: RecordingUpstream,
                                        settings_env: Callable[..., None]) -> None:
    settings_env(USER_RPM="1", JWT_SECRET=SECRET)
    admin = bearer("ops", roles=["admin"])
    assert [client.post("/api/chat", json=HELLO, headers=admin).status_code for _ in range(3)] == [200] * 3


def test_a_down_first_upstream_falls_back_to_the_second(client: TestClient, upstream: RecordingUpstream,
                                                        settings_env: Callable[..., None]) -> None:
    settings_env(LLM_BASE_URLS=f"{closed_port_url()},{upstream.url}")  # type: ignore[attr-defined]
    answer = client.post("/api/chat", json=HELLO)
    assert answer.status_code == 200 and answer.json()["data"]["content"] == "Hi!"
    assert len(upstream.headers) == 1


def test_the_breaker_opens_after_failures_and_closes_after_its_cool_off(
        client: TestClient, upstream: RecordingUpstream, settings_env: Callable[..., None]) -> None:
    settings_env(BREAKER_FAILURES="2", BREAKER_COOLOFF_S="1")
    upstream.down = True
    failed = client.post("/api/chat", json=HELLO)
    assert failed.status_code == 502 and len(upstream.headers) == 2  # tried, then retried once
    paused = client.post("/api/chat", json=HELLO)
    assert paused.status_code == 502 and paused.json()["error"]["code"] == "upstream_circuit_open"
    assert len(upstream.headers) == 2, "an open breaker sends nothing upstream"
    assert client.get("/api/health").json()["data"]["breakers"] == {"llm[0]": "open"}
    upstream.down = False
    time.sleep(2.1)  # the cool-off, and the one-second cache of the breaker's state
    assert client.post("/api/chat", json=HELLO).status_code == 200
    assert client.get("/api/health").json()["data"]["breakers"] == {"llm[0]": "closed"}


def test_a_stream_is_never_retried_after_its_first_byte(client: TestClient,
                                                        settings_env: Callable[..., None]) -> None:
    llm = FakeLLM(reply="one two three four", token_delay_s=0.01)
    with serve(llm.app()) as url:
        settings_env(LLM_BASE_URLS=f"{url},{closed_port_url()}")
        answer = client.post("/api/chat", json={**HELLO, "stream": True})
    assert answer.status_code == 200 and "event: done" in answer.text
    assert len(llm.chat_prompts) == 1


def test_speech_falls_back_to_a_second_gpt_sovits(client: TestClient, settings_env: Callable[..., None],
                                                  tmp_path: Any) -> None:
    from tests.support.gpt_sovits_server import FakeGptSovits

    voices = tmp_path / "voices.json"
    voices.write_text(json.dumps({"voices": [{"id": "default", "name": "기본",
                                              "ref_audio_path": "/srv/default.wav"}]}))
    fake = FakeGptSovits()
    with serve(fake.build()) as url:
        settings_env(TTS_BASE_URL=url, TTS_BASE_URLS=f"{closed_port_url()},{url}", VOICES_FILE=str(voices))
        answer = client.post("/api/tts", json={"text": "안녕하세요.", "return_binary": True})
    assert answer.status_code == 200 and answer.content[:4] == b"RIFF"

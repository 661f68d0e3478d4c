"""Unlimited conversations: the token budget, rolling summaries, and their safety, on real Redis."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from roleplay.chat.prompt import is_gemma_valid
from roleplay.chat.summarizer import Summarizer
from roleplay.llm.client import ChatMessage
from tests.support.fake_llm import FakeLLM
from tests.support.session_keys import session_key
from tests.support.upstream_server import serve

MAX_TOKENS = 64
CONTEXT = 1024


@pytest.fixture
def fake_llm(fake_upstream: FakeLLM, settings_env: Callable[..., None]) -> FakeLLM:
    settings_env(MAX_CONTEXT_TOKENS=str(CONTEXT), RECENT_TURNS_TO_KEEP="4", SUMMARY_RETRY_AFTER_S="0")
    return fake_upstream


def _line(n: int) -> str:
    return f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. 너는 어때?"


def _turn(client: TestClient, sid: str, text: str, **extra: object) -> dict:
    response = client.post("/api/chat", json={"session_id": sid, "max_tokens": MAX_TOKENS,
                                              "messages": [{"role": "user", "content": text}],
                                              **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _session(client: TestClient, sid: str) -> dict:
    response = client.get(f"/api/chat/sessions/{sid}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


def _fits(llm: FakeLLM, prompt: list[dict[str, str]], context: int = CONTEXT) -> bool:
    return llm.true_tokens(prompt) + MAX_TOKENS <= context


def test_turns_past_the_threshold_fold_old_messages_into_a_summary(fake_llm: FakeLLM,
                                                                   client: TestClient) -> None:
    replies = [_turn(client, "s-threshold", _line(n)) for n in range(14)]
    session = _session(client, "s-threshold")
    assert session["summary"], "a summary was made once the threshold was passed"
    assert session["summary_upto"] >= 0
    assert session["message_count"] - session["summary_upto"] - 1 >= 4, "recent turns stay verbatim"
    assert not replies[0]["context_summarized"]
    assert replies[-1]["context_summarized"]
    assert all(r["dropped_messages"] == 0 for r in replies), "summaries kept every prompt whole"
    last = fake_llm.chat_prompts[-1]
    assert "[이전 대화 요약]" in last[0]["content"], "the last prompt carries a summary"
    assert all(_fits(fake_llm, p) and is_gemma_valid([ChatMessage(**m) for m in p])
               for p in fake_llm.chat_prompts)
    assert session["tokens"]["ratio"] > 1.1, "learned from the upstream's prompt_tokens"


def test_a_later_summary_folds_the_previous_one(fake_llm: FakeLLM, client: TestClient) -> None:
    for n in range(30):
        _turn(client, "s-fold", _line(n))
    assert len(fake_llm.summary_prompts) >= 2
    second = fake_llm.summary_prompts[1][1]["content"]
    assert "요약 1:" in second, "the previous summary is folded into the next"


def test_each_summary_pass_reads_a_bounded_stretch(fake_llm: FakeLLM, settings_env,
                                                   client: TestClient) -> None:
    settings_env(SUMMARY_INPUT_TOKENS="200")
    for n in range(14):
        _turn(client, "s-bounded", _line(n))
    assert fake_llm.summary_prompts
    for prompt in fake_llm.summary_prompts:
        dialogue = prompt[1]["content"].split("[이어진 대화]", 1)[1]
        assert dialogue.count("번째 이야기") <= 200 // 30 + 1


def test_the_user_never_waits_for_a_summary(fake_llm: FakeLLM) -> None:
    """With the runner under uvicorn, a turn returns while its summary is still running."""
    from local_runner.app import build_app

    fake_llm.gate = threading.Event()
    with serve(build_app()) as api, httpx.Client(base_url=api, timeout=10) as http:
        for n in range(20):
            response = http.post("/api/chat", json={
                "session_id": "s-offpath", "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": _line(n)}]})
            assert response.status_code == 200, response.text
            if fake_llm.summary_started.is_set():
                break
        assert fake_llm.summary_started.is_set(), "a summary was started"
        assert not fake_llm.gate.is_set(), "...and the turn returned while it was held"
        during = http.post("/api/chat", json={
            "session_id": "s-offpath", "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": "요약 중에도 대화는 계속돼."}]})
        assert during.status_code == 200
        fake_llm.gate.set()


def test_a_summary_landing_after_new_turns_loses_none_of_them(fake_llm: FakeLLM, settings_env,
                                                              client: TestClient) -> None:
    settings_env(SUMMARY_THRESHOLD="1.0", MAX_CONTEXT_TOKENS="4096")
    for n in range(6):
        _turn(client, "s-race", _line(n))
    before = _session(client, "s-race")
    assert before["summary"] is None
    fake_llm.gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        summary = pool.submit(asyncio.run, Summarizer().summarize(session_key(client, "s-race"),
                                                                  max_passes=1))
        assert fake_llm.summary_started.wait(10)
        for n in range(6, 10):
            _turn(client, "s-race", _line(n))
        fake_llm.gate.set()
        result = summary.result(timeout=10)
    assert result.outcome == "summarized"
    after = _session(client, "s-race")
    assert after["message_count"] == 20
    assert after["summary_upto"] <= before["message_count"] - 4 - 1, "covers only what it read"
    _turn(client, "s-race", "마지막 말")
    prompt = "\n".join(m["content"] for m in fake_llm.chat_prompts[-1])
    for message in after["messages"][after["summary_upto"] + 1:]:
        assert message["content"] in prompt, "every message after the watermark is in the prompt"


def test_only_one_summary_runs_per_session(fake_llm: FakeLLM, settings_env,
                                           client: TestClient) -> None:
    settings_env(SUMMARY_THRESHOLD="1.0", MAX_CONTEXT_TOKENS="4096")
    for n in range(6):
        _turn(client, "s-lock", _line(n))
    fake_llm.gate = threading.Event()

    key = session_key(client, "s-lock")

    async def both() -> list[str]:
        first = asyncio.create_task(Summarizer().summarize(key))
        await asyncio.to_thread(fake_llm.summary_started.wait, 10)
        second = await Summarizer().summarize(key)
        fake_llm.gate.set()
        return [(await first).outcome, second.outcome]

    assert asyncio.run(both()) == ["summarized", "busy"]
    assert len(fake_llm.summary_prompts) >= 1


def test_a_crashed_summarizers_lock_blocks_summaries_only_until_its_ttl(
        fake_llm: FakeLLM, settings_env, client: TestClient, sync_redis) -> None:
    """A summarizer that took the lock and died (never released it) holds the session's
    summaries back for `SUMMARY_LOCK_TTL_S`, not for ever: the next summarizer after the
    TTL runs."""
    from roleplay.chat.summarizer import SummaryLock
    from roleplay.core.settings import get_settings

    settings_env(SUMMARY_THRESHOLD="1.0", MAX_CONTEXT_TOKENS="4096")
    for n in range(6):
        _turn(client, "s-stale", _line(n))
    key = session_key(client, "s-stale")
    crashed = SummaryLock(key, get_settings().summary_lock_ttl_s)
    assert asyncio.run(crashed.acquire()), "the crashed summarizer took the lock..."
    ttl_ms = get_settings().summary_lock_ttl_s * 1000
    assert ttl_ms - 5_000 < sync_redis.pttl(crashed.key) <= ttl_ms, "...with the TTL"

    assert asyncio.run(Summarizer().summarize(key)).outcome == "busy"
    assert fake_llm.summary_prompts == [] and _session(client, "s-stale")["summary"] is None

    sync_redis.pexpire(crashed.key, 1)  # the TTL runs out (rather than waited for)
    while sync_redis.exists(crashed.key):
        asyncio.run(asyncio.sleep(0.01))
    assert asyncio.run(Summarizer().summarize(key)).outcome == "summarized"
    assert fake_llm.summary_prompts and _session(client, "s-stale")["summary"]
    assert not sync_redis.exists(crashed.key), "the new holder released its own lock"


def test_a_failed_summary_keeps_the_old_one_and_is_retried(fake_llm: FakeLLM,
                                                          client: TestClient) -> None:
    for n in range(14):
        _turn(client, "s-fail", _line(n))
    good = _session(client, "s-fail")
    assert good["summary"]
    fake_llm.fail_summaries = True
    for n in range(14, 22):
        assert _turn(client, "s-fail", _line(n))["content"], "chat goes on while summaries fail"
    failing = _session(client, "s-fail")
    assert failing["summary"] == good["summary"]
    assert failing["summary_upto"] == good["summary_upto"]
    assert "model overloaded" in failing["summary_error"]
    tried = len(fake_llm.summary_prompts)
    fake_llm.fail_summaries = False
    _turn(client, "s-fail", _line(22))
    healed = _session(client, "s-fail")
    assert len(fake_llm.summary_prompts) > tried
    assert healed["summary_upto"] > good["summary_upto"] and healed["summary_error"] is None


def test_a_prompt_that_cannot_fit_is_summarized_on_the_request_path(
        fake_llm: FakeLLM, settings_env, client: TestClient) -> None:
    # the summary request itself must fit the 1,024-token context: a shorter answer leaves
    # room for the stretch it folds
    settings_env(SUMMARY_THRESHOLD="1.0", SUMMARY_MAX_TOKENS="128")
    for n in range(5):
        _turn(client, "s-hard", _line(n))
    assert _session(client, "s-hard")["summary"] is None
    reply = _turn(client, "s-hard", "긴 이야기: " + "비가 오는 날의 카페는 조용했다. " * 25)
    assert reply["context_summarized"] is True and reply["dropped_messages"] == 0
    assert _fits(fake_llm, fake_llm.chat_prompts[-1])


def test_when_even_a_summary_fails_the_oldest_messages_leave_the_prompt_only(
        fake_llm: FakeLLM, settings_env, client: TestClient) -> None:
    settings_env(SUMMARY_THRESHOLD="1.0")
    fake_llm.fail_summaries = True
    for n in range(5):
        _turn(client, "s-drop", _line(n))
    reply = _turn(client, "s-drop", "긴 이야기: " + "비가 오는 날의 카페는 조용했다. " * 25)
    assert reply["dropped_messages"] > 0
    assert _fits(fake_llm, fake_llm.chat_prompts[-1])
    assert is_gemma_valid([ChatMessage(**m) for m in fake_llm.chat_prompts[-1]])
    assert _session(client, "s-drop")["message_count"] == 12, "the transcript keeps everything"


def test_a_message_too_long_for_the_context_is_a_clear_4xx(fake_llm: FakeLLM,
                                                          client: TestClient) -> None:
    response = client.post("/api/chat", json={
        "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "가나다라 " * 1500}]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "message_too_long"


def test_max_tokens_that_leave_no_room_is_a_clear_4xx(fake_llm: FakeLLM, client: TestClient) -> None:
    response = client.post("/api/chat", json={
        "max_tokens": CONTEXT, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_too_small"


def test_three_hundred_turns_stay_within_budget_and_keep_every_message(
        fake_llm: FakeLLM, settings_env, client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="2048", RECENT_TURNS_TO_KEEP="18")
    for n in range(300):
        reply = _turn(client, "s-300", _line(n) + (" 그리고" * (n % 7)))
        assert reply["dropped_messages"] == 0
    session = _session(client, "s-300")
    assert session["message_count"] == 600
    assert [m["content"] for m in session["messages"][::2]][:2] == [_line(0), _line(1) + " 그리고"]
    assert len(fake_llm.chat_prompts) == 300
    assert all(_fits(fake_llm, p, 2048) for p in fake_llm.chat_prompts), "every prompt in budget"
    assert all(is_gemma_valid([ChatMessage(**m) for m in p]) for p in fake_llm.chat_prompts)
    assert session["summary"] and session["summary_upto"] > 500
    assert len(fake_llm.chat_prompts[-1]) < 40, "the prompt stays small at turn 300"


def test_session_view_reports_summary_watermark_and_tokens(fake_llm: FakeLLM,
                                                          client: TestClient) -> None:
    for n in range(14):
        _turn(client, "s-view", _line(n))
    view = _session(client, "s-view")
    assert view["message_count"] == len(view["messages"]) == 28
    tokens = view["tokens"]
    assert tokens["transcript"] > tokens["after_watermark"] > 0
    assert tokens["summary"] > 0 and tokens["max_context"] == CONTEXT
    assert client.delete("/api/chat/sessions/s-view").json()["data"]["ended"] is True
    assert client.get("/api/chat/sessions/s-view").status_code == 404


def test_streamed_turns_schedule_summaries_too(fake_llm: FakeLLM, client: TestClient) -> None:
    for n in range(14):
        response = client.post("/api/chat", json={
            "session_id": "s-stream", "max_tokens": MAX_TOKENS, "stream": True,
            "messages": [{"role": "user", "content": _line(n)}]})
        assert response.status_code == 200 and "event: done" in response.text
    assert _session(client, "s-stream")["summary"]


def test_the_deployed_stack_invokes_the_summarizer_function_asynchronously(
        fake_llm: FakeLLM, aws: None, settings_env, client: TestClient) -> None:
    import boto3

    from functions.summarizer.app import handler
    from roleplay.chat.background_jobs import _lambda_client

    iam = boto3.client("iam")
    role = iam.create_role(RoleName="summarizer", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("lambda").create_function(
        FunctionName="summarizer", Runtime="python3.12", Role=role, Handler="app.handler",
        Code={"ZipFile": _zipped("app.py", "def handler(event, context):\n    return event\n")})
    settings_env(SUMMARIZER_FUNCTION="summarizer")
    _lambda_client.cache_clear()
    calls: list[dict] = []
    answers: list[dict] = []
    events = _lambda_client().meta.events
    events.register("provide-client-params.lambda.Invoke",
                    lambda params, **_: calls.append(dict(params)))
    events.register("after-call.lambda.Invoke", lambda parsed, **_: answers.append(parsed))
    try:
        for n in range(14):
            _turn(client, "s-lambda", _line(n))
            if calls:
                break
    finally:
        _lambda_client.cache_clear()
    assert calls, "a turn past the threshold invoked the summarizer"
    assert calls[0]["InvocationType"] == "Event" and calls[0]["FunctionName"] == "summarizer"
    assert json.loads(calls[0]["Payload"]) == {"kind": "summary",
                                               "session_id": session_key(client, "s-lambda")}
    assert answers[0]["StatusCode"] == 202
    assert _session(client, "s-lambda")["summary"] is None, "nothing ran in-process"
    result = handler(json.loads(calls[0]["Payload"]), None)
    assert result["outcome"] == "summarized"
    assert _session(client, "s-lambda")["summary"]


def test_the_summarizer_function_refuses_a_bad_event() -> None:
    from functions.summarizer.app import handler

    assert handler({"session_id": "../x"}, None)["outcome"] == "invalid_event"
    assert handler({}, None)["outcome"] == "invalid_event"


@pytest.mark.llm
def test_summaries_on_the_real_llm(real_llm, settings_env, client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", RECENT_TURNS_TO_KEEP="4", SUMMARY_MAX_TOKENS="96",
                 SUMMARY_LANGUAGE="en", PERSONA_LANGUAGE="en")
    character = client.post("/api/characters", json={
        "name": "Mia", "persona": "A cheerful barista in Seoul."}).json()["data"]
    sid = None
    # The model's replies vary in length from run to run (a reply of 21 tokens every turn
    # left 12 turns under the threshold), so the turns go on until a summary was made.
    for n in range(30):
        body = {"character_id": character["id"], "max_tokens": 48, "messages": [
            {"role": "user", "content": f"Turn {n}: my name is Alex and I love rainy days. "
                                        "Tell me about your cafe and your favourite coffee."}]}
        if sid:
            body["session_id"] = sid
        response = client.post("/api/chat", json=body)
        assert response.status_code == 200, response.text
        sid = response.json()["data"]["session_id"]
        if n >= 11 and _session(client, sid)["summary"]:
            break
    view = _session(client, sid)
    assert view["summary"] and view["summary"].strip()
    assert view["summary_upto"] >= 0 and view["tokens"]["summary"] <= 96 + 8
    reply = client.post("/api/chat", json={"session_id": sid, "max_tokens": 32, "messages": [
        {"role": "user", "content": "Do you remember my name?"}]}).json()["data"]
    assert reply["context_summarized"] is True

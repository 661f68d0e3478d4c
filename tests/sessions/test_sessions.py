"""Sessions under real clients (issue 13): one turn at a time, retries, refusals that
store nothing, deletes that stick, edited histories, on real Redis over real HTTP.

Concurrency runs through two local-runner processes (tests/support/server_process.py) sharing
the test's Redis, so only Redis can keep the turns in order. The upstream is a scripted
OpenAI-compatible server (`tests/support/tagged_llm.py`) that answers each turn with the tag of the message
it answers (`re msg-3`), slowly enough for turns to overlap; one test runs on the real
llama.cpp server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.fake_llm import FakeLLM
from tests.support.real_redis import RedisServer, sync_client
from tests.support.server_process import server_b_process
from tests.support.session_keys import session_key
from tests.support.sse import sse_events
from tests.support.tagged_llm import TaggedLLM
from tests.support.upstream_server import closed_port_url, serve


@pytest.fixture
def echo(settings_env: Callable[..., None]) -> Iterator[TaggedLLM]:
    llm = TaggedLLM(delay_s=0.15)
    with serve(llm.app()) as url:
        settings_env(LLM_BASE_URL=url)
        yield llm


@contextmanager
def _runners(env: dict[str, str]) -> Iterator[list[str]]:
    """Two local runners on the test's Redis and key prefix, started side by side."""
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(stack.enter_context, server_b_process(env)) for _ in range(2)]
        yield [future.result().base_url for future in starting]


@pytest.fixture
def two_runners(echo: TaggedLLM) -> Iterator[list[str]]:
    with _runners({}) as urls:
        yield urls


def _post(base_url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        return http.post("/api/chat", json={"tts_enabled": False, **body}, headers=headers)


def _all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _transcript(client: TestClient | httpx.Client, sid: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/chat/sessions/{sid}")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["data"]["messages"]
    return messages


def _pairs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def _say(client: TestClient, sid: str | None, text: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"tts_enabled": False, "messages": [{"role": "user", "content": text}],
                            **extra}
    if sid is not None:
        body["session_id"] = sid
    return client.post("/api/chat", json=body)


def _session_keys(url: str, prefix: str) -> list[str]:
    client = sync_client(url)
    try:
        return sorted(k for k in client.scan_iter(f"{prefix}session:*"))
    finally:
        client.close()


def _active_users(url: str, prefix: str) -> int:
    client = sync_client(url)
    try:
        return int(client.zcard(f"{prefix}active-users"))
    finally:
        client.close()


# --- one turn at a time ---------------------------------------------------------------------


def test_ten_different_concurrent_turns_alternate_each_reply_after_its_message(
        echo: TaggedLLM, two_runners: list[str]) -> None:
    sid = "s-ten"
    calls = [lambda n=n: _post(two_runners[n % 2], {  # type: ignore[misc]
        "session_id": sid, "stream": n % 3 == 0,
        "messages": [{"role": "user", "content": f"msg-{n}"}]}) for n in range(10)]
    responses = _all_at_once(calls)
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    with httpx.Client(base_url=two_runners[0]) as http:
        messages = _transcript(http, sid)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 10
    for asked, answer in zip(messages[::2], messages[1::2], strict=True):
        assert answer["content"] == f"re {asked['content']}", "each reply right after its message"
    assert sorted(m["content"] for m in messages[::2]) == sorted(f"msg-{n}" for n in range(10))
    assert len(echo.chats) == 10
    for prompt in echo.chats:  # each prompt saw a whole, alternating conversation
        roles = [m["role"] for m in prompt[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]


def test_the_same_turn_ten_times_at_once_is_generated_once(
        echo: TaggedLLM, two_runners: list[str]) -> None:
    sid = "s-storm"
    _post(two_runners[0], {"session_id": sid, "messages": [{"role": "user", "content": "msg-0"}]})
    body = {"session_id": sid, "messages": [{"role": "user", "content": "msg-1"}]}
    calls = [lambda n=n: _post(two_runners[n % 2], {**body, "stream": n % 2 == 1})  # type: ignore[misc]
             for n in range(10)]
    responses = _all_at_once(calls)
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    with httpx.Client(base_url=two_runners[1]) as http:
        messages = _transcript(http, sid)
    assert _pairs(messages) == [("user", "msg-0"), ("assistant", "re msg-0"),
                                ("user", "msg-1"), ("assistant", "re msg-1")]
    assert len(echo.chats) == 2, "one generation for the ten copies"
    ids = set()
    for response in responses:
        if response.headers["content-type"].startswith("text/event-stream"):
            events = sse_events(response.text)
            content = "".join(d["content"] for name, d in events if name == "delta")
            done = events[-1][1]
        else:
            done = response.json()["data"]
            content = done["content"]
        assert content == "re msg-1"
        ids.add((done["message_id"], done["user_message_id"]))
    assert ids == {(messages[3]["id"], messages[2]["id"])}


def test_a_retry_with_the_same_idempotency_key_returns_the_stored_reply(
        echo: TaggedLLM, client: TestClient) -> None:
    key = {"Idempotency-Key": "turn-7"}
    first = client.post("/api/chat", headers=key, json={
        "session_id": "s-key", "tts_enabled": False,
        "messages": [{"role": "user", "content": "msg-7"}]}).json()["data"]
    again = client.post("/api/chat", headers=key, json={
        "session_id": "s-key", "tts_enabled": False,
        "messages": [{"role": "user", "content": "msg-7"}]}).json()["data"]
    assert again["replayed"] is True and first["replayed"] is False
    assert (again["content"], again["message_id"]) == (first["content"], first["message_id"])
    other = client.post("/api/chat", headers={"Idempotency-Key": "turn-8"}, json={
        "session_id": "s-key", "tts_enabled": False,
        "messages": [{"role": "user", "content": "msg-7"}]}).json()["data"]
    assert other["replayed"] is False, "another key is another turn, even with the same words"
    assert len(_transcript(client, "s-key")) == 4 and len(echo.chats) == 2


def test_a_history_re_sent_after_its_answer_is_a_swipe_and_a_lone_message_a_retry(
        echo: TaggedLLM, client: TestClient) -> None:
    """`/api/chat` follows `/v1`'s rule for re-sent histories (issue 27): the same history
    again, ending with the user message already answered, is another version of the reply;
    a lone message re-sent within the retry window is a retry (its stored reply), and an
    `Idempotency-Key` decides alone."""
    first = _say(client, "s-swipe", "msg-1").json()["data"]
    assert _say(client, "s-swipe", "msg-1").json()["data"]["replayed"] is True
    history = [{"role": "user", "content": "msg-1"}, {"role": "assistant", "content": first["content"]},
               {"role": "user", "content": "msg-2"}]
    client.post("/api/chat", json={"session_id": "s-swipe", "tts_enabled": False,
                                   "messages": history})
    asked = len(echo.chats)
    swiped = client.post("/api/chat", json={"session_id": "s-swipe", "tts_enabled": False,
                                            "messages": history}).json()["data"]
    assert swiped["replayed"] is False and len(echo.chats) == asked + 1
    assert [a["selected"] for a in swiped["alternatives"]] == [False, True]
    keyed = client.post("/api/chat", headers={"Idempotency-Key": "k-1"}, json={
        "session_id": "s-swipe", "tts_enabled": False, "messages": history}).json()["data"]
    again = client.post("/api/chat", headers={"Idempotency-Key": "k-1"}, json={
        "session_id": "s-swipe", "tts_enabled": False, "messages": history}).json()["data"]
    assert again["replayed"] is True and again["content"] == keyed["content"]
    assert [m["role"] for m in _transcript(client, "s-swipe")] == ["user", "assistant"] * 2


def test_a_turn_that_waits_too_long_is_409_turn_in_progress(
        echo: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(TURN_WAIT_S="0.2")
    echo.delay_s = 1.0
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_say, client, "s-busy", "msg-1")
        assert echo.started.wait(10)
        refused = _say(client, "s-busy", "msg-2")
        assert slow.result().status_code == 200
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "turn_in_progress"
    assert refused.headers["Retry-After"] == "1"
    assert _pairs(_transcript(client, "s-busy")) == [("user", "msg-1"), ("assistant", "re msg-1")]


def test_a_stream_longer_than_the_lease_keeps_its_session(
        settings_env: Callable[..., None], client: TestClient) -> None:
    """TURN_LEASE_S=5 and a reply streamed over 8 s: the lease is renewed as chunks come,
    so a turn sent at 6.5 s is refused, not let in to make the first reply's fence drop it."""
    llm = FakeLLM(reply=" ".join(f"w{n}" for n in range(40)), token_delay_s=0.2)
    with serve(llm.app()) as url:
        settings_env(LLM_BASE_URL=url, TURN_LEASE_S="5", TURN_WAIT_S="0")
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(_say, client, "s-long", "msg-1", stream=True)
            time.sleep(6.5)
            refused = _say(client, "s-long", "msg-2")
            streamed = long.result()
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "turn_in_progress"
    assert sse_events(streamed.text)[-1][0] == "done"
    assert _pairs(_transcript(client, "s-long")) == [("user", "msg-1"), ("assistant", llm.reply)]


# --- refusals store nothing and hold no slot -------------------------------------------------


@pytest.mark.parametrize(("extra", "text", "status", "code"), [
    ({"max_tokens": 8192}, "msg-1", 400, "context_too_small"),
    ({}, "가나다라 " * 3200, 400, "message_too_long"),
    ({"character_id": "missing"}, "msg-1", 404, "character_not_found"),
])
def test_a_refused_turn_stores_nothing_and_holds_no_slot(
        echo: TaggedLLM, client: TestClient, redis_url: str, key_prefix: str,
        extra: dict[str, Any], text: str, status: int, code: str) -> None:
    assert _say(client, "s-kept", "msg-0").status_code == 200
    before = _transcript(client, "s-kept")
    refused = _say(client, "s-kept", text, **extra)
    assert refused.status_code == status, refused.text
    assert refused.json()["error"]["code"] in (code, "not_found")
    assert _transcript(client, "s-kept") == before

    keys = _session_keys(redis_url, key_prefix)
    slots = _active_users(redis_url, key_prefix)
    first = _say(client, None, text, **extra)
    assert first.status_code == status
    assert "details" not in first.json()["error"] or "session_id" not in first.json()["error"]["details"]
    assert _session_keys(redis_url, key_prefix) == keys, "no session the client never learns of"
    assert _active_users(redis_url, key_prefix) == slots, "no slot taken"
    assert len(echo.chats) == 1


def test_a_first_turn_whose_upstream_fails_leaves_no_session_and_no_slot(
        settings_env: Callable[..., None], client: TestClient, redis_url: str,
        key_prefix: str) -> None:
    settings_env(LLM_BASE_URL=closed_port_url())
    for stream in (False, True):
        failed = _say(client, None, "msg-1", stream=stream)
        assert failed.status_code == 502, failed.text
    assert _session_keys(redis_url, key_prefix) == []
    assert _active_users(redis_url, key_prefix) == 0


def test_max_turns_holds_for_many_messages_in_one_request_and_for_racing_turns(
        echo: TaggedLLM) -> None:
    with _runners({"MAX_TURNS": "3"}) as runners:
        many = _post(runners[0], {"session_id": "s-many", "messages": [
            {"role": "user", "content": f"msg-{n}"} for n in range(10)]})
        assert many.status_code == 409 and many.json()["error"]["code"] == "turn_limit_reached"
        assert _post(runners[0], {"session_id": "s-many", "messages": [
            {"role": "user", "content": "msg-0"}]}).status_code == 200, "the refused one stored nothing"

        responses = _all_at_once([lambda n=n: _post(runners[n % 2], {  # type: ignore[misc]
            "session_id": "s-cap", "messages": [{"role": "user", "content": f"msg-{n}"}]})
            for n in range(8)])
        assert sorted(r.status_code for r in responses) == [200] * 3 + [409] * 5
        with httpx.Client(base_url=runners[0]) as http:
            session = http.get("/api/chat/sessions/s-cap").json()["data"]
    assert session["user_turns"] == 3 and len(session["messages"]) == 6


# --- a deleted session stays deleted ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_session_deleted_while_its_reply_is_generated_stays_gone(
        echo: TaggedLLM, two_runners: list[str], stream: bool) -> None:
    """The turn runs on one instance, the DELETE lands on the other."""
    turning, deleting = two_runners
    body = {"session_id": "s-gone", "messages": [{"role": "user", "content": "msg-0"}]}
    assert _post(turning, body).status_code == 200
    echo.started.clear()
    echo.delay_s = 0.8
    late_body = {**body, "stream": stream, "messages": [{"role": "user", "content": "msg-1"}]}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=deleting) as http:
        late = pool.submit(_post, turning, late_body)
        assert echo.started.wait(10)
        assert http.delete("/api/chat/sessions/s-gone").json()["data"]["ended"] is True
        answered = late.result()
        assert answered.status_code == 200
        assert http.get("/api/chat/sessions/s-gone").status_code == 404, "the late reply was dropped"
        echo.delay_s = 0
        assert _post(deleting, {**body, "messages": [
            {"role": "user", "content": "msg-2"}]}).status_code == 200
        assert _pairs(_transcript(http, "s-gone")) == [("user", "msg-2"), ("assistant", "re msg-2")], \
            "the next caller of the id starts afresh"
    if not stream:
        assert answered.json()["data"]["message_id"] is None, "the answer says it was not stored"


# --- message ids, re-sent and edited histories ------------------------------------------------


def test_every_message_has_an_id_in_answers_and_in_the_session(echo: TaggedLLM,
                                                                client: TestClient) -> None:
    reply = _say(client, "s-ids", "msg-0").json()["data"]
    messages = _transcript(client, "s-ids")
    assert [m["id"] for m in messages] == [reply["user_message_id"], reply["message_id"]]
    assert len(set(m["id"] for m in messages)) == 2


def test_client_state_keys_are_accepted_and_an_empty_character_is_none(
        echo: TaggedLLM, client: TestClient) -> None:
    response = client.post("/api/chat", json={
        "session_id": "s-react", "character_id": "", "tts_enabled": False,
        "messages": [{"role": "user", "content": "msg-0", "id": 1732600000000,
                      "timestamp": "2026-11-26T10:00:00Z", "pending": True}]})
    assert response.status_code == 200, response.text


def test_a_resent_history_with_trimmed_spaces_and_ids_is_not_stored_twice(
        echo: TaggedLLM, client: TestClient) -> None:
    first = _say(client, "s-resend", "msg-0").json()["data"]
    history = [{"role": "user", "content": "  msg-0 ", "id": "client-temp-1"},
               {"role": "assistant", "content": "re  msg-0", "id": first["message_id"]},
               {"role": "user", "content": "msg-1"}]
    assert client.post("/api/chat", json={"session_id": "s-resend", "tts_enabled": False,
                                          "messages": history}).status_code == 200
    assert _pairs(_transcript(client, "s-resend")) == [
        ("user", "msg-0"), ("assistant", "re msg-0"), ("user", "msg-1"), ("assistant", "re msg-1")]


def test_an_edited_history_rewinds_to_the_edit_and_continues_from_the_client(
        echo: TaggedLLM, client: TestClient) -> None:
    for n in range(3):
        _say(client, "s-edit", f"msg-{n}")
    stored = _transcript(client, "s-edit")
    edited = [{"role": m["role"], "content": m["content"], "id": m["id"]} for m in stored[:2]]
    edited += [{"role": "user", "content": "msg-1 (고쳐 씀)", "id": stored[2]["id"]}]
    reply = client.post("/api/chat", json={"session_id": "s-edit", "tts_enabled": False,
                                           "messages": edited}).json()["data"]
    assert reply["content"] == "re msg-1"
    after = _transcript(client, "s-edit")
    assert _pairs(after) == [("user", "msg-0"), ("assistant", "re msg-0"),
                             ("user", "msg-1 (고쳐 씀)"), ("assistant", "re msg-1")]
    assert after[:2] == stored[:2], "what the client agreed with keeps its ids"
    assert after[2]["id"] != stored[2]["id"]
    session = client.get("/api/chat/sessions/s-edit").json()["data"]
    assert session["user_turns"] == 2


def test_an_edited_whole_conversation_without_ids_or_the_opening_line_is_not_duplicated(
        echo: TaggedLLM, client: TestClient) -> None:
    character = client.post("/api/characters", json={"name": "민지", "first_message": "어서 와!"})
    sid = client.post("/api/chat", json={"character_id": character.json()["data"]["id"],
                                         "tts_enabled": False}).json()["data"]["session_id"]
    for n in range(3):
        _say(client, sid, f"msg-{n}")
    held = [(m["role"], m["content"]) for m in _transcript(client, sid)][1:]  # no opening line
    held[2] = ("user", "msg-1, 다시 말하면")
    history = [{"role": role, "content": content} for role, content in held[:3]]
    assert client.post("/api/chat", json={"session_id": sid, "tts_enabled": False,
                                          "messages": history}).status_code == 200
    assert _pairs(_transcript(client, sid)) == [
        ("assistant", "어서 와!"), ("user", "msg-0"), ("assistant", "re msg-0"),
        ("user", "msg-1, 다시 말하면"), ("assistant", "re msg-1")]


def test_an_edit_below_the_summary_rebuilds_the_summary_without_the_edited_fact(
        echo: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", SUMMARY_MAX_TOKENS="128", RECENT_TURNS_TO_KEEP="4",
                 SUMMARY_RETRY_AFTER_S="0")
    echo.delay_s = 0
    filler = "오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. "
    lines = ["msg-0 내 고양이 이름은 나비야. " + filler * 2] + [
        f"msg-{n} " + filler * 2 for n in range(1, 10)]
    for n, line in enumerate(lines):
        assert _say(client, "s-fact", line, max_tokens=64).status_code == 200, n
    session = client.get("/api/chat/sessions/s-fact").json()["data"]
    assert session["summary_upto"] >= 0 and "나비" in session["summary"]

    history = [{"role": m["role"], "content": m["content"], "id": m["id"]}
               for m in session["messages"]]
    history[0] = {"role": "user", "content": lines[0].replace("나비", "모모")}
    history.append({"role": "user", "content": "msg-10 " + filler})
    echo.summaries.clear()
    response = client.post("/api/chat", json={"session_id": "s-fact", "tts_enabled": False,
                                              "max_tokens": 64, "messages": history})
    assert response.status_code == 200, response.text
    for n in range(11, 14):
        _say(client, "s-fact", f"msg-{n} " + filler * 2, max_tokens=64)
    rebuilt = client.get("/api/chat/sessions/s-fact").json()["data"]
    contents = [m["content"] for m in rebuilt["messages"] if m["role"] == "user"]
    assert len(contents) == len(set(contents)) == 14, "no message stored twice"
    assert "모모" in contents[0] and not any("나비" in c for c in contents)
    assert echo.summaries and rebuilt["summary_upto"] >= 0
    assert "나비" not in rebuilt["summary"], "the summary is rebuilt from what remains"
    assert "모모" in rebuilt["summary"]
    assert not any("나비" in s for s in echo.summaries), "no summary folded the old message"


def test_a_summary_made_across_a_rewind_is_not_saved(
        fake_upstream: FakeLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(RECENT_TURNS_TO_KEEP="2")
    for n in range(4):
        assert _say(client, "s-cas", f"msg-{n}").status_code == 200
    stored = _transcript(client, "s-cas")
    fake_upstream.gate = threading.Event()
    from roleplay.chat.summarizer import Summarizer

    with ThreadPoolExecutor(1) as pool:
        summary = pool.submit(asyncio.run, Summarizer().summarize(session_key(client, "s-cas"),
                                                                  max_passes=1))
        assert fake_upstream.summary_started.wait(10)
        edited = client.post("/api/chat", json={"session_id": "s-cas", "tts_enabled": False, "messages": [
            {"role": "user", "content": "msg-0", "id": stored[0]["id"]},
            {"role": "user", "content": "msg-1 (고쳐 씀)"}]})
        assert edited.status_code == 200, edited.text
        fake_upstream.gate.set()
        assert summary.result(timeout=10).outcome == "nothing_to_do"
    session = client.get("/api/chat/sessions/s-cas").json()["data"]
    assert session["summary"] is None and session["summary_upto"] == -1
    assert [m["content"] for m in session["messages"]][:2] == ["msg-0", "msg-1 (고쳐 씀)"]


def test_the_store_rewinds_to_an_index_for_edits(echo: TaggedLLM, client: TestClient) -> None:
    """`SessionStore.rewind_to`, which edit/delete/regenerate build on."""
    from roleplay.sessions.store import SessionStore

    for n in range(3):
        _say(client, "s-rewind", f"msg-{n}")
    store, key = SessionStore(), session_key(client, "s-rewind")
    before = asyncio.run(store.load_meta(key))
    assert before is not None and before.user_turns == 3
    assert asyncio.run(store.rewind_to(key, 2)) == 4
    after = asyncio.run(store.load_meta(key))
    assert after is not None and after.user_turns == 1 and after.epoch == before.epoch + 1
    assert _pairs(_transcript(client, "s-rewind")) == [("user", "msg-0"), ("assistant", "re msg-0")]
    assert asyncio.run(store.rewind_to("s-missing", 0)) is None
    reply = _say(client, "s-rewind", "msg-3").json()["data"]
    assert [m["id"] for m in _transcript(client, "s-rewind")][2:] == [
        reply["user_message_id"], reply["message_id"]]


# --- summaries on the request path -----------------------------------------------------------


def test_request_path_summaries_honour_the_retry_backoff(
        fake_upstream: FakeLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", SUMMARY_THRESHOLD="1.0", RECENT_TURNS_TO_KEEP="4",
                 SUMMARY_RETRY_AFTER_S="3600")
    fake_upstream.fail_summaries = True
    for n in range(5):
        assert _say(client, "s-backoff", f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 "
                    "비를 한참 동안 바라봤어. 너는 어때?", max_tokens=64).status_code == 200
    long = "긴 이야기: " + "비가 오는 날의 카페는 조용했다. " * 25
    for n in range(3):
        reply = _say(client, "s-backoff", f"{n}. {long}", max_tokens=64)
        assert reply.status_code == 200 and reply.json()["data"]["dropped_messages"] > 0
    # One attempt (failover retries a 503 once: two requests), then the backoff.
    assert len(fake_upstream.summary_prompts) == 2, "one attempt, then the backoff"


def test_one_huge_message_cannot_make_every_summary_fail(
        settings_env: Callable[..., None], client: TestClient) -> None:
    echo = TaggedLLM(summary_context=4096)
    with serve(echo.app()) as url:
        settings_env(LLM_BASE_URL=url, MAX_CONTEXT_TOKENS="32768")
        huge = "msg-0 " + "비가 오는 날의 카페는 조용했다. " * 800  # ~15,000 characters
        assert _say(client, "s-huge", huge).status_code == 200
        for n in range(1, 12):
            _say(client, "s-huge", f"msg-{n}")
        settings_env(MAX_CONTEXT_TOKENS="4096", RECENT_TURNS_TO_KEEP="4")
        from roleplay.chat.summarizer import Summarizer

        result = asyncio.run(Summarizer().summarize(session_key(client, "s-huge")))
    assert result.outcome == "summarized", result
    session = client.get("/api/chat/sessions/s-huge").json()["data"]
    assert session["summary_error"] is None and session["summary_upto"] >= 0
    assert "msg-0" in echo.summaries[0], "the huge message was folded, cut to fit"


# --- Redis failing mid-stream ----------------------------------------------------------------


def test_redis_failing_during_a_streamed_turn_ends_it_with_an_error_event(
        settings_env: Callable[..., None], tmp_path: Path) -> None:
    from local_runner.app import build_app

    server = RedisServer(tmp_path / "redis")
    server.start()
    echo = TaggedLLM()
    try:
        with serve(echo.app()) as url:
            settings_env(REDIS_URL=server.url, LLM_BASE_URL=url)
            with TestClient(build_app(), raise_server_exceptions=False) as client, \
                    client.stream("POST", "/api/chat", json={
                        "session_id": "s-redis", "stream": True, "tts_enabled": False,
                        "messages": [{"role": "user", "content": "msg-1"}]}) as response:
                assert response.status_code == 200
                chunks = response.iter_text()
                text = next(chunks)
                server.stop()
                text += "".join(chunks)
    finally:
        server.stop()
    events = sse_events(text)
    assert events[0][0] == "delta"
    assert events[-1][0] == "error" and events[-1][1]["code"] == "redis_unavailable"
    assert events[-1][1]["session_id"] == "s-redis"


# --- the real model --------------------------------------------------------------------------


@pytest.mark.llm
def test_concurrent_copies_of_a_turn_on_the_real_llm_are_answered_once(
        real_llm: object, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(TURN_WAIT_S="60")  # a shared 2-core machine may take seconds per reply
    body = {"session_id": "s-real", "max_tokens": 16, "tts_enabled": False,
            "messages": [{"role": "user", "content": "Hi! What is your name?"}]}
    responses = _all_at_once([lambda: client.post("/api/chat", json=body) for _ in range(4)])
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len({r.json()["data"]["content"] for r in responses}) == 1
    assert sum(r.json()["data"]["replayed"] for r in responses) == 3
    assert [m["role"] for m in _transcript(client, "s-real")] == ["user", "assistant"]
    edited = client.post("/api/chat", json={**body, "messages": [
        {"role": "user", "content": "Hi!  What is your name? "},
        {"role": "user", "content": "And what do you sell?"}]})
    assert edited.status_code == 200, edited.text
    assert [m["role"] for m in _transcript(client, "s-real")] == [
        "user", "user", "assistant"], "the client's view (no reply in between) wins"

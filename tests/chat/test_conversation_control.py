"""Conversation control (issue 18) on real Redis over real HTTP: regenerate with
alternatives, select, edit, delete and rewind, continue, the paged transcript, the
summary and pins the user can fix, their interplay with summaries, and with turns
racing them (two local-runner processes sharing the test's Redis).

The upstream is a scripted OpenAI-compatible server: each reply names the tagged user
message it answers and a serial number (`re msg-3 #5`), so versions differ and a test
can see which message a reply answers; a summary echoes the dialogue it was given, so
a test can see what a summary was made from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from roleplay.chat.prompt import is_gemma_valid
from roleplay.core.token_counter import message_tokens
from roleplay.llm.client import ChatMessage
from tests.support.server_process import server_b_process
from tests.support.sign_in import SECRET, bearer
from tests.support.sse import sse_events
from tests.support.tagged_llm import TaggedLLM
from tests.support.upstream_server import serve

S = "/api/chat/sessions"


@pytest.fixture
def llm(settings_env: Callable[..., None]) -> Iterator[TaggedLLM]:
    scripted = TaggedLLM(numbered=True)
    with serve(scripted.app()) as url:
        settings_env(LLM_BASE_URL=url)
        yield scripted


def _say(client: TestClient | httpx.Client, sid: str, text: str, **extra: Any) -> httpx.Response:
    return client.post("/api/chat", json={"session_id": sid, "tts_enabled": False,
                                          "messages": [{"role": "user", "content": text}], **extra})


def _messages(client: TestClient | httpx.Client, sid: str) -> list[dict[str, Any]]:
    response = client.get(f"{S}/{sid}/messages", params={"limit": 200})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["data"]["messages"]
    return messages


def _session(client: TestClient | httpx.Client, sid: str) -> dict[str, Any]:
    response = client.get(f"{S}/{sid}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body


def _gemma(prompt: list[dict[str, str]]) -> bool:
    return is_gemma_valid([ChatMessage(m["role"], m["content"]) for m in prompt])


def _started(client: TestClient, sid: str, turns: int) -> None:
    for n in range(1, turns + 1):
        assert _say(client, sid, f"msg-{n}").status_code == 200


# --- regenerate and select --------------------------------------------------------------------


def test_regenerate_keeps_the_previous_reply_as_an_alternative_and_select_switches_back(
        llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-regen", 2)
    before = _messages(client, "s-regen")
    old = before[-1]
    response = client.post(f"{S}/s-regen/regenerate", json={"tts_enabled": False})
    assert response.status_code == 200, response.text
    reply = response.json()["data"]
    assert reply["content"] == "re msg-2 #3" and reply["message_id"] == old["id"]
    assert reply["alternatives"] == [
        {"index": 0, "content": "re msg-2 #2", "selected": False},
        {"index": 1, "content": "re msg-2 #3", "selected": True}]
    prompt = llm.chats[-1]
    assert _gemma(prompt) and prompt[-1]["content"] == "msg-2"
    assert not any("#2" in m["content"] for m in prompt), "the old reply is not in the prompt"

    after = _messages(client, "s-regen")
    assert [m["id"] for m in after] == [m["id"] for m in before], "one message, same id"
    assert after[-1]["content"] == "re msg-2 #3" and len(after[-1]["alternatives"]) == 2
    assert after[-1]["tokens"] == message_tokens("re msg-2 #3")

    selected = client.post(f"{S}/s-regen/messages/{old['id']}/select", json={"index": 0})
    assert selected.status_code == 200, selected.text
    assert selected.json()["data"]["message"]["content"] == "re msg-2 #2"
    assert _say(client, "s-regen", "msg-3").status_code == 200
    assert "re msg-2 #2" in [m["content"] for m in llm.chats[-1]], "the selected one is prompted"
    assert _session(client, "s-regen")["user_turns"] == 3


def test_regenerate_streams_the_same_events_as_a_turn(llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-regen-sse", 1)
    with client.stream("POST", f"{S}/s-regen-sse/regenerate",
                       json={"stream": True, "tts_enabled": False}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"}
    text = "".join(data["content"] for name, data in events if name == "delta")
    assert text == "re msg-1 #2"
    done = events[-1][1]
    assert [a["content"] for a in done["alternatives"]] == ["re msg-1 #1", "re msg-1 #2"]
    assert _messages(client, "s-regen-sse")[-1]["content"] == "re msg-1 #2"


def test_regenerate_after_a_failed_turn_answers_the_last_user_message(
        llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-regen-user", 1)
    messages = _messages(client, "s-regen-user")
    assert client.delete(f"{S}/s-regen-user/messages/{messages[-1]['id']}").status_code == 200
    _error(client.post(f"{S}/s-regen-user/continue", json={}), 409, "last_message_is_user")
    response = client.post(f"{S}/s-regen-user/regenerate", json={"tts_enabled": False})
    assert response.status_code == 200, response.text
    assert [(m["role"], m["content"]) for m in _messages(client, "s-regen-user")] == [
        ("user", "msg-1"), ("assistant", "re msg-1 #2")]
    assert not _messages(client, "s-regen-user")[-1]["greeting"]


def test_refusals_are_404_or_409_and_change_nothing(llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-refuse", 1)
    before = _messages(client, "s-refuse")
    user_id = before[0]["id"]
    _error(client.post(f"{S}/s-refuse/messages/{user_id}/select", json={"index": 0}),
           409, "not_an_assistant_message")
    _error(client.post(f"{S}/s-refuse/messages/{before[1]['id']}/select", json={"index": 5}),
           404, "alternative_not_found")
    _error(client.post(f"{S}/s-refuse/messages/nope/select", json={"index": 0}),
           404, "message_not_found")
    _error(client.patch(f"{S}/s-refuse/messages/nope", json={"content": "x"}), 404,
           "message_not_found")
    _error(client.delete(f"{S}/s-refuse/messages/nope"), 404, "message_not_found")
    _error(client.post(f"{S}/s-missing/regenerate", json={}), 404, "session_not_found")
    _error(client.post(f"{S}/s-missing/continue", json={}), 404, "session_not_found")
    _error(client.get(f"{S}/s-missing/messages"), 404, "session_not_found")
    _error(client.put(f"{S}/s-missing/summary", json={"text": "x"}), 404, "session_not_found")
    _error(client.post(f"{S}/s-missing/pins", json={"text": "x"}), 404, "session_not_found")
    _error(client.post(f"{S}/s-refuse/regenerate", json={"max_tokens": 8192}), 400,
           "context_too_small")
    assert client.patch(f"{S}/s-refuse/messages/{user_id}", json={"content": ""}).status_code == 422
    assert _messages(client, "s-refuse") == before
    assert len(llm.chats) == 1, "no refusal reached the model"


def test_another_users_session_does_not_exist_for_any_action(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(JWT_SECRET=SECRET)
    owner, other = bearer("owner-1"), bearer("other-2")
    started = client.post("/api/chat", headers=owner, json={
        "session_id": "s-owned", "tts_enabled": False,
        "messages": [{"role": "user", "content": "msg-1"}]})
    assert started.status_code == 200, started.text
    before = client.get(f"{S}/s-owned/messages", headers=owner).json()["data"]["messages"]
    reply_id = before[1]["id"]
    for method, path, body in [
            ("POST", "/regenerate", {}), ("POST", "/continue", {}), ("GET", "/messages", None),
            ("POST", f"/messages/{reply_id}/select", {"index": 0}),
            ("PATCH", f"/messages/{reply_id}", {"content": "x"}),
            ("DELETE", f"/messages/{reply_id}", None), ("PUT", "/summary", {"text": "x"}),
            ("POST", "/pins", {"text": "x"}), ("DELETE", "/pins", None)]:
        response = client.request(method, f"{S}/s-owned{path}", json=body, headers=other)
        _error(response, 404, "session_not_found")
    assert client.get(f"{S}/s-owned/messages", headers=owner).json()["data"]["messages"] == before


# --- edit, delete, rewind ---------------------------------------------------------------------


def test_an_edit_changes_the_message_in_place_and_in_later_prompts(
        llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-edit", 2)
    first = _messages(client, "s-edit")[0]
    response = client.patch(f"{S}/s-edit/messages/{first['id']}",
                            json={"content": "msg-1 내 이름은 지수야"})
    assert response.status_code == 200, response.text
    changed = response.json()["data"]["message"]
    assert changed["edited"] is True and changed["id"] == first["id"]
    assert changed["tokens"] == message_tokens("msg-1 내 이름은 지수야")
    reply = _messages(client, "s-edit")[1]
    edited_reply = client.patch(f"{S}/s-edit/messages/{reply['id']}", json={"content": "좋아!"})
    assert edited_reply.json()["data"]["message"]["edited"] is True
    assert _say(client, "s-edit", "msg-3").status_code == 200
    contents = [m["content"] for m in llm.chats[-1]]
    assert "msg-1 내 이름은 지수야" in contents and "좋아!" in contents and _gemma(llm.chats[-1])
    assert len(_messages(client, "s-edit")) == 6


def test_delete_removes_one_message_and_and_after_rewinds_keeping_turn_counts_exact(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_TURNS="3")
    _started(client, "s-del", 3)
    _error(_say(client, "s-del", "msg-4"), 409, "turn_limit_reached")
    messages = _messages(client, "s-del")
    deleted = client.delete(f"{S}/s-del/messages/{messages[1]['id']}")
    assert deleted.status_code == 200 and deleted.json()["data"]["deleted"] == 1
    left = _messages(client, "s-del")
    assert [m["id"] for m in left] == [m["id"] for n, m in enumerate(messages) if n != 1]
    assert [m["index"] for m in left] == list(range(5))
    assert _say(client, "s-del", "msg-3").json()["data"]["replayed"] is True, "ids still map"

    rewound = client.delete(f"{S}/s-del/messages/{messages[2]['id']}", params={"and_after": "true"})
    assert rewound.status_code == 200 and rewound.json()["data"]["deleted"] == 4
    assert [m["content"] for m in _messages(client, "s-del")] == ["msg-1"]
    assert _session(client, "s-del")["user_turns"] == 1
    assert _say(client, "s-del", "msg-5").status_code == 200
    assert _say(client, "s-del", "msg-6").status_code == 200
    _error(_say(client, "s-del", "msg-7"), 409, "turn_limit_reached")
    assert _gemma(llm.chats[-1]), "two user messages in a row are merged in the prompt"


# --- continue ---------------------------------------------------------------------------------


def test_continue_extends_the_last_reply_as_one_message(llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-cont", 1)
    reply = _messages(client, "s-cont")[-1]
    response = client.post(f"{S}/s-cont/continue", json={"tts_enabled": False})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["content"] == "re msg-1 #1 re msg-1 #2" and data["message_id"] == reply["id"]
    prompt = llm.chats[-1]
    assert _gemma(prompt) and prompt[-2] == {"role": "assistant", "content": "re msg-1 #1"}
    assert prompt[-1]["role"] == "user" and "이어서" in prompt[-1]["content"]
    messages = _messages(client, "s-cont")
    assert len(messages) == 2 and messages[-1]["content"] == "re msg-1 #1 re msg-1 #2"
    assert messages[-1]["tokens"] == message_tokens("re msg-1 #1 re msg-1 #2")

    with client.stream("POST", f"{S}/s-cont/continue",
                       json={"stream": True, "tts_enabled": False}) as streamed:
        events = sse_events(streamed.read().decode())
    assert events[-1][0] == "done"
    assert "".join(d["content"] for n, d in events if n == "delta") == "re msg-1 #3"
    assert _messages(client, "s-cont")[-1]["content"] == "re msg-1 #1 re msg-1 #2 re msg-1 #3"


def test_speech_follows_the_tts_mode_of_regenerated_and_continued_replies(
        llm: TaggedLLM, client: TestClient) -> None:
    """The embedded eSpeak NG engine speaks (no TTS_BASE_URL)."""
    _started(client, "s-speak", 1)
    spoken = client.post(f"{S}/s-speak/regenerate", json={"tts_mode": "realtime"}).json()["data"]
    assert spoken["audio_url"] and spoken["tts_error"] is None
    audio = client.get(spoken["audio_url"])
    assert audio.status_code == 200 and len(audio.content) > 1000
    silent = client.post(f"{S}/s-speak/continue", json={"tts_mode": "on_click"}).json()["data"]
    assert silent["audio_url"] is None and silent["tts_error"] is None
    with client.stream("POST", f"{S}/s-speak/continue",
                       json={"stream": True, "tts_mode": "realtime"}) as streamed:
        events = sse_events(streamed.read().decode())
    assert "audio" in [name for name, _ in events] and events[-1][0] == "done"


# --- the paged transcript ---------------------------------------------------------------------


def test_messages_are_paged_with_ids_indexes_and_flags(llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-page", 3)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor is not None:
            params["cursor"] = cursor
        data = client.get(f"{S}/s-page/messages", params=params).json()["data"]
        seen += data["messages"]
        assert data["total"] == 6
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert [m["index"] for m in seen] == list(range(6))
    assert {"id", "role", "content", "cut", "greeting", "edited"} <= set(seen[0])
    _error(client.get(f"{S}/s-page/messages", params={"cursor": "x"}), 400, "bad_cursor")


# --- memory: summary and pins -----------------------------------------------------------------


def test_a_fixed_summary_keeps_its_watermark_and_is_used_by_the_next_turn(
        llm: TaggedLLM, client: TestClient) -> None:
    _started(client, "s-sum", 1)
    response = client.put(f"{S}/s-sum/summary", json={"text": "사용자의 이름은 지수다."})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["summary_upto"] == -1
    session = _session(client, "s-sum")
    assert session["summary"] == "사용자의 이름은 지수다." and session["summary_upto"] == -1
    assert _say(client, "s-sum", "msg-2").status_code == 200
    assert "사용자의 이름은 지수다." in llm.chats[-1][0]["content"]


def test_pins_stay_in_the_system_prompt_after_the_persona_up_to_max_pins(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_PINS="2")
    assert _say(client, "s-pins", "msg-1", persona="너는 민지야.").status_code == 200
    first = client.post(f"{S}/s-pins/pins", json={"text": "사용자는 고양이 알레르기가 있다"})
    assert first.status_code == 200, first.text
    client.post(f"{S}/s-pins/pins", json={"text": "내일은 사용자의 생일이다"})
    _error(client.post(f"{S}/s-pins/pins", json={"text": "세 번째"}), 409, "pins_full")
    _error(client.post(f"{S}/s-pins/pins", json={"text": "x" * 500}), 400, "bad_pin")
    pins = _session(client, "s-pins")["pins"]
    assert [p["text"] for p in pins] == ["사용자는 고양이 알레르기가 있다", "내일은 사용자의 생일이다"]

    assert _say(client, "s-pins", "msg-2").status_code == 200
    system = llm.chats[-1][0]["content"]
    assert system.index("민지") < system.index("고양이 알레르기") < system.index("생일")
    assert _gemma(llm.chats[-1])
    removed = client.delete(f"{S}/s-pins/pins/{pins[0]['id']}")
    assert [p["text"] for p in removed.json()["data"]["pins"]] == ["내일은 사용자의 생일이다"]
    _error(client.delete(f"{S}/s-pins/pins/{pins[0]['id']}"), 404, "pin_not_found")
    assert client.delete(f"{S}/s-pins/pins").json()["data"]["pins"] == []
    assert _say(client, "s-pins", "msg-3").status_code == 200
    assert "생일" not in llm.chats[-1][0]["content"]


def test_an_edit_below_the_watermark_rebuilds_the_summary_without_the_edited_away_fact(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", SUMMARY_MAX_TOKENS="128", RECENT_TURNS_TO_KEEP="4",
                 SUMMARY_RETRY_AFTER_S="0")
    filler = "오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. "
    lines = ["msg-0 내 고양이 이름은 나비야. " + filler * 2] + [
        f"msg-{n} " + filler * 2 for n in range(1, 10)]
    for n, line in enumerate(lines):
        assert _say(client, "s-fact", line, max_tokens=64).status_code == 200, n
    session = _session(client, "s-fact")
    assert session["summary_upto"] >= 0 and "나비" in session["summary"]

    first = session["messages"][0]
    edited = client.patch(f"{S}/s-fact/messages/{first['id']}",
                          json={"content": lines[0].replace("나비", "모모")})
    assert edited.status_code == 200 and edited.json()["data"]["summary_invalidated"] is True
    cleared = _session(client, "s-fact")
    assert cleared["summary"] is None and cleared["summary_upto"] == -1, "never used again"

    llm.summaries.clear()
    for n in range(10, 14):
        assert _say(client, "s-fact", f"msg-{n} " + filler * 2, max_tokens=64).status_code == 200
    rebuilt = _session(client, "s-fact")
    assert llm.summaries and rebuilt["summary_upto"] >= 0
    assert "나비" not in rebuilt["summary"] and "모모" in rebuilt["summary"]
    assert not any("나비" in s for s in llm.summaries), "no summary folded the old text"
    assert not any("나비" in m["content"] for chat in llm.chats[-4:] for m in chat)


def test_a_summary_being_made_from_text_edited_meanwhile_is_dropped(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", SUMMARY_MAX_TOKENS="128", RECENT_TURNS_TO_KEEP="4")
    filler = "오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. "
    lines = ["msg-0 내 고양이 이름은 나비야. " + filler * 2] + [
        f"msg-{n} " + filler * 2 for n in range(1, 10)]
    llm.summary_gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        turns = pool.submit(lambda: [_say(client, "s-stale", line, max_tokens=64).status_code
                                     for line in lines])
        assert llm.summary_started.wait(60), "a summary started in the background"
        assert "나비" in llm.summaries[0]
        first = _messages(client, "s-stale")[0]
        edited = client.patch(f"{S}/s-stale/messages/{first['id']}",
                              json={"content": lines[0].replace("나비", "모모")})
        assert edited.status_code == 200, edited.text
        llm.summary_gate.set()
        assert turns.result() == [200] * len(lines)
    session = _session(client, "s-stale")
    assert "나비" not in (session["summary"] or ""), "the stale summary never landed"


def test_a_delete_above_the_watermark_keeps_the_summary_and_one_below_clears_it(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(MAX_CONTEXT_TOKENS="1024", SUMMARY_MAX_TOKENS="128", RECENT_TURNS_TO_KEEP="4")
    filler = "오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 동안 바라봤어. "
    for n in range(10):
        assert _say(client, "s-keep", f"msg-{n} " + filler * 2, max_tokens=64).status_code == 200
    session = _session(client, "s-keep")
    assert session["summary_upto"] >= 0
    last = session["messages"][-1]
    response = client.delete(f"{S}/s-keep/messages/{last['id']}")
    assert response.json()["data"]["summary_invalidated"] is False
    after = _session(client, "s-keep")
    assert (after["summary"], after["summary_upto"]) == (session["summary"], session["summary_upto"])
    below = client.delete(f"{S}/s-keep/messages/{session['messages'][0]['id']}")
    assert below.json()["data"]["summary_invalidated"] is True
    cleared = _session(client, "s-keep")
    assert (cleared["summary"], cleared["summary_upto"]) == (None, -1)
    assert cleared["user_turns"] == 9 and cleared["message_count"] == 18


# --- racing normal turns ----------------------------------------------------------------------


def test_an_action_waiting_too_long_for_a_turn_is_409_and_changes_nothing(
        llm: TaggedLLM, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(TURN_WAIT_S="0.2")
    _started(client, "s-wait", 1)
    llm.reply_gate, llm.started = threading.Event(), threading.Event()
    reply = _messages(client, "s-wait")[-1]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_say, client, "s-wait", "msg-2")
        assert llm.started.wait(10)
        refused = [client.post(f"{S}/s-wait/regenerate", json={"tts_enabled": False}),
                   client.patch(f"{S}/s-wait/messages/{reply['id']}", json={"content": "x"}),
                   client.delete(f"{S}/s-wait/messages/{reply['id']}"),
                   client.put(f"{S}/s-wait/summary", json={"text": "x"})]
        llm.reply_gate.set()
        assert slow.result().status_code == 200
    for response in refused:
        _error(response, 409, "turn_in_progress")
    assert [m["content"] for m in _messages(client, "s-wait")] == [
        "msg-1", "re msg-1 #1", "msg-2", "re msg-2 #2"]


def test_regenerates_racing_turns_across_two_processes_keep_the_transcript_alternating(
        llm: TaggedLLM) -> None:
    llm.delay_s = 0.1
    with server_b_process({}) as one, server_b_process({}) as two:
        urls = [one.base_url, two.base_url]
        with httpx.Client(base_url=urls[0], timeout=60) as http:
            assert _say(http, "s-race", "msg-0").status_code == 200

        def turn(n: int) -> httpx.Response:
            with httpx.Client(base_url=urls[n % 2], timeout=60) as http:
                return _say(http, "s-race", f"msg-{n}")

        def regenerate(n: int) -> httpx.Response:
            with httpx.Client(base_url=urls[n % 2], timeout=60) as http:
                return http.post(f"{S}/s-race/regenerate", json={"tts_enabled": False})

        barrier = threading.Barrier(8)

        def run(call: Callable[[], httpx.Response]) -> httpx.Response:
            barrier.wait()
            return call()

        calls = [lambda n=n: turn(n) for n in range(1, 5)] + [
            lambda n=n: regenerate(n) for n in range(4)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(run, calls))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        with httpx.Client(base_url=urls[1], timeout=60) as http:
            messages = _messages(http, "s-race")
            session = _session(http, "s-race")
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * 5, roles
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert sorted(users) == [f"msg-{n}" for n in range(5)], "no duplicates"
    assert len({m["id"] for m in messages}) == 10
    for asked, reply in zip(messages[::2], messages[1::2], strict=True):
        for version in reply["alternatives"] or [{"content": reply["content"]}]:
            assert version["content"].startswith(f"re {asked['content']} #"), (asked, reply)
    assert sum(len(m["alternatives"] or [1]) for m in messages[1::2]) == 5 + 4
    assert session["user_turns"] == 5


# --- on the real model ------------------------------------------------------------------------


def test_regenerate_edit_and_continue_on_the_real_llm(
        real_llm: object, settings_env: Callable[..., None], client: TestClient) -> None:
    settings_env(TURN_WAIT_S="60")
    first = client.post("/api/chat", json={
        "session_id": "s-real-control", "max_tokens": 12, "tts_enabled": False, "temperature": 1.0,
        "messages": [{"role": "user", "content": "Hi! What is your name?"}]})
    assert first.status_code == 200, first.text
    again = client.post(f"{S}/s-real-control/regenerate",
                        json={"max_tokens": 12, "tts_enabled": False, "temperature": 1.0})
    assert again.status_code == 200, again.text
    assert len(again.json()["data"]["alternatives"]) == 2
    with client.stream("POST", f"{S}/s-real-control/continue",
                       json={"max_tokens": 12, "stream": True, "tts_enabled": False}) as streamed:
        events = sse_events(streamed.read().decode())
    assert events[-1][0] == "done", events
    added = "".join(d["content"] for n, d in events if n == "delta")
    messages = _messages(client, "s-real-control")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"].endswith(added) and not messages[1]["cut"]
    user_id = messages[0]["id"]
    assert client.patch(f"{S}/s-real-control/messages/{user_id}",
                        json={"content": "Hello! Who are you?"}).status_code == 200
    assert client.post(f"{S}/s-real-control/regenerate",
                       json={"max_tokens": 12, "tts_enabled": False}).status_code == 200

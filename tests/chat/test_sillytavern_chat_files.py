"""SillyTavern chat files (issue 27): a session exported as SillyTavern's JSONL chat and
such a file imported as a new session, on real Redis over real HTTP.

The sample file is written as SillyTavern 1.12.6 writes one (SillyTavern/SillyTavern,
commit ba6f7b7a): `public/script.js` `saveChat` (the header), `getFirstMessage` (the
greeting, its alternate greetings as swipes), `sendMessageAsUser`, `saveReply` (swipes,
`swipe_info`, `gen_started`/`gen_finished`, `extra.api`/`model`),
`public/scripts/slash-commands.js` `sendNarratorMessage` (a narrator line), a line hidden
with /hide (`is_system: true`), and the dates of `public/scripts/RossAscends-mods.js`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roleplay.chat.control.alternatives import MAX_ALTERNATIVES
from roleplay.chat.sillytavern_chat import (
    ImportLimits,
    chat_jsonl,
    humanized_date_time,
    message_time_stamp,
    parse_send_date,
    read_chat_file,
    swipes_to_alternatives,
)
from roleplay.core.token_counter import message_tokens
from roleplay.sessions.store import Role, StoredMessage
from tests.support.sign_in import bearer
from tests.support.tagged_llm import TaggedLLM
from tests.support.upstream_server import serve

S = "/api/chat/sessions"
SEND_DATE = re.compile(r"^(January|February|March|April|May|June|July|August|September|October"
                       r"|November|December) \d{1,2}, \d{4} \d{1,2}:\d{2}(am|pm)$")
CREATE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}@\d{2}h\d{2}m\d{2}s$")

SILLYTAVERN_CHAT = [
    {"user_name": "Jisu", "character_name": "Minji", "create_date": "2024-09-28@01h02m36s",
     "chat_metadata": {"integrity": "5f0c1e38-3c4d-4f5e-9a62-0d6f1e0b7a11", "note_prompt": "",
                       "note_interval": 1, "note_position": 1, "note_depth": 4, "note_role": 0,
                       "tainted": True, "timedWorldInfo": {"sticky": {}, "cooldown": {}}}},
    {"name": "Minji", "is_user": False, "is_system": False,
     "send_date": "September 28, 2024 1:02am", "mes": "어서 와, Jisu! 오늘은 뭐 마실래?",
     "extra": {}, "swipe_id": 0, "swipes": ["어서 와, Jisu! 오늘은 뭐 마실래?", "또 왔네? 늘 먹던 걸로?"],
     "swipe_info": []},
    {"name": "Jisu", "is_user": True, "is_system": False,
     "send_date": "September 28, 2024 1:03am", "mes": "라떼 한 잔 주세요.",
     "extra": {"isSmallSys": False}, "force_avatar": "User Avatars/user-default.png"},
    {"extra": {"api": "openai", "model": "gemma-3-27b-it"}, "name": "Minji", "is_user": False,
     "send_date": "September 28, 2024 1:04am", "mes": "따뜻한 라떼 나왔어! *컵을 건넨다*",
     "title": "", "gen_started": "2024-09-28T01:04:02.120Z",
     "gen_finished": "2024-09-28T01:04:05.480Z", "swipe_id": 1,
     "swipes": ["라떼 여기! 시럽은?", "따뜻한 라떼 나왔어! *컵을 건넨다*"],
     "swipe_info": [
         {"send_date": "September 28, 2024 1:03am", "gen_started": "2024-09-28T01:03:40.000Z",
          "gen_finished": "2024-09-28T01:03:43.000Z", "extra": {"api": "openai"}},
         {"send_date": "September 28, 2024 1:04am", "gen_started": "2024-09-28T01:04:02.120Z",
          "gen_finished": "2024-09-28T01:04:05.480Z", "extra": {"api": "openai"}}]},
    {"name": "Jisu", "is_user": True, "is_system": True,
     "send_date": "September 28, 2024 1:05am", "mes": "(hidden with /hide)", "extra": {}},
    {"name": "System", "is_user": False, "is_system": False,
     "send_date": "September 28, 2024 1:06am", "mes": "카페는 십 분 뒤에 문을 닫는다.",
     "force_avatar": "img/five.png",
     "extra": {"type": "narrator", "bias": None, "gen_id": 1727485560000, "isSmallSys": False,
               "api": "manual", "model": "slash command"}},
    {"name": "Jisu", "is_user": True, "is_system": False,
     "send_date": "September 28, 2024 1:07pm", "mes": "벌써요?", "extra": {}},
]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    """As SillyTavern's `/api/chats/save` writes a chat: `JSON.stringify` each, `\\n` between."""
    return "\n".join(json.dumps(line, ensure_ascii=False, separators=(",", ":"))
                     for line in lines).encode("utf-8")


@pytest.fixture
def llm(settings_env: Callable[..., None]) -> Iterator[TaggedLLM]:
    scripted = TaggedLLM(numbered=True)
    with serve(scripted.app()) as url:
        settings_env(LLM_BASE_URL=url)
        yield scripted


@pytest.fixture
def character_id(client: TestClient) -> str:
    response = client.post("/api/characters", json={"name": "민지", "first_message": "어서 와!"})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def _import(client: TestClient, body: bytes, character_id: str, **headers: str) -> httpx.Response:
    return client.post(f"{S}/import", params={"character_id": character_id}, content=body,
                       headers={"Content-Type": "application/octet-stream", **headers})


def _imported(client: TestClient, body: bytes, character_id: str, **headers: str) -> dict[str, Any]:
    response = _import(client, body, character_id, **headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _messages(client: TestClient, sid: str, **headers: str) -> list[dict[str, Any]]:
    response = client.get(f"{S}/{sid}/messages", params={"limit": 200}, headers=headers)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["data"]["messages"]
    return messages


def _transcript(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a round trip keeps: role, content, alternatives and the selected one, greeting."""
    return [(m["role"], m["content"], m["greeting"],
             [(a["content"], a["selected"]) for a in m["alternatives"] or []]) for m in messages]


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def _session_keys(sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> list[str]:
    return sorted(str(key) for key in sync_redis.scan_iter(f"{key_prefix}session:*"))


def _lines(export: httpx.Response) -> list[dict[str, Any]]:
    assert export.status_code == 200, export.text
    return [json.loads(line) for line in export.content.decode("utf-8").split("\n")]


# --- import -----------------------------------------------------------------------------------


def test_a_sillytavern_chat_becomes_a_new_session_with_its_swipes_greeting_and_narrator(
        client: TestClient, character_id: str) -> None:
    answer = _imported(client, jsonl(SILLYTAVERN_CHAT), character_id)
    assert answer["message_count"] == 5 and answer["user_turns"] == 2
    assert answer["skipped_system_messages"] == 1, "the line hidden with /hide is not imported"
    assert answer["character_id"] == character_id

    messages = _messages(client, answer["session_id"])
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant", "system", "user"]
    greeting, latte, reply, narrator, last = messages
    assert greeting["greeting"] and not any(m["greeting"] for m in messages[1:])
    assert greeting["alternatives"] == [
        {"index": 0, "content": "어서 와, Jisu! 오늘은 뭐 마실래?", "selected": True},
        {"index": 1, "content": "또 왔네? 늘 먹던 걸로?", "selected": False}]
    assert reply["content"] == "따뜻한 라떼 나왔어! *컵을 건넨다*"
    assert [(a["content"], a["selected"]) for a in reply["alternatives"]] == [
        ("라떼 여기! 시럽은?", False), ("따뜻한 라떼 나왔어! *컵을 건넨다*", True)]
    assert latte["content"] == "라떼 한 잔 주세요." and latte["alternatives"] is None
    assert narrator["content"] == "카페는 십 분 뒤에 문을 닫는다."
    assert all(m["tokens"] == message_tokens(m["content"]) for m in messages)
    assert greeting["at"] == 1727485320.0, "September 28, 2024 1:02am, read as UTC"
    assert last["at"] == 1727485320.0 + 12 * 3600 + 5 * 60, "1:07pm"
    assert len({m["id"] for m in messages}) == 5

    session = client.get(f"{S}/{answer['session_id']}").json()["data"]
    assert session["character_id"] == character_id and session["user_turns"] == 2
    assert session["summary"] is None and session["summary_upto"] == -1, "no summary at import"


def test_the_file_may_come_as_the_multipart_field_file(client: TestClient, character_id: str) -> None:
    response = client.post(f"{S}/import", params={"character_id": character_id},
                           files={"file": ("Minji - 2024-09-28@01h02m36s.jsonl",
                                           jsonl(SILLYTAVERN_CHAT), "application/octet-stream")})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["message_count"] == 5


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded",  # curl --data-binary without -H
    "application/jsonl", "application/x-ndjson", "text/plain; charset=utf-8", "application/json"])
def test_the_raw_body_may_come_with_any_content_type(
        client: TestClient, character_id: str, content_type: str) -> None:
    answer = _imported(client, jsonl(SILLYTAVERN_CHAT), character_id, **{"Content-Type": content_type})
    assert answer["message_count"] == 5


def test_chub_swipes_and_the_newer_dates_read_too(client: TestClient, character_id: str) -> None:
    """Chub's `{message}` objects (`flattenChubChat`), ISO and unix-millisecond send_dates
    (later releases, `importRisuChat`), and a send_date no one can read (the import's time)."""
    before = time.time()
    answer = _imported(client, jsonl([
        {"user_name": "unused", "character_name": "unused", "chat_metadata": {}},
        {"name": "Jisu", "is_user": True, "send_date": "2024-09-28T01:02:36.500Z",
         "mes": {"message": "hi"}},
        {"name": "Minji", "is_user": False, "send_date": 1727485400000, "mes": "b",
         "swipe_id": 1, "swipes": [{"message": "a"}, {"message": "b"}]},
        {"name": "Jisu", "is_user": True, "send_date": "someday", "mes": "bye"},
    ]), character_id)
    first, reply, last = _messages(client, answer["session_id"])
    assert (first["content"], first["at"], first["greeting"]) == ("hi", 1727485356.5, False)
    assert reply["at"] == 1727485400.0
    assert [(a["content"], a["selected"]) for a in reply["alternatives"]] == [("a", False), ("b", True)]
    assert before - 1 <= last["at"] <= time.time() + 1


def test_past_ten_swipes_the_oldest_unselected_ones_go_as_regenerate_drops_them() -> None:
    swipes = [f"v{n}" for n in range(14)]
    texts, selected = swipes_to_alternatives("v2", swipes, 2)
    assert texts == ["v2", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13"]
    assert selected == 0 and texts is not None and len(texts) == MAX_ALTERNATIVES
    texts, selected = swipes_to_alternatives("v13", swipes, 13)
    assert texts == swipes[4:] and selected == 9


def test_mes_wins_over_the_swipe_it_selects() -> None:
    """SillyTavern keeps `mes` as shown (an edit), and a bad swipe_id names nothing."""
    assert swipes_to_alternatives("edited", ["a", "b"], 1) == (["a", "edited"], 1)
    assert swipes_to_alternatives("b", ["a", "b"], 7) == (["a", "b"], 1)
    assert swipes_to_alternatives("c", ["a", "b"], None) == (["a", "b", "c"], 2)
    assert swipes_to_alternatives("a", ["a"], 0) == (None, None)
    assert swipes_to_alternatives("a", "not a list", 0) == (None, None)


@pytest.mark.parametrize("value, expected", [
    ("September 28, 2024 1:02am", 1727485320.0),                # getMessageTimeStamp
    ("September 28, 2024 12:02pm", 1727524920.0),
    ("Sep 28, 2024 12:02am", 1727481720.0),
    ("2024-09-28@01h02m36s", 1727485356.0),                     # humanizedDateTime
    ("2024-9-28@01h02m36s123ms", 1727485356.123),
    ("2024-9-28 @1h 2m 36s 5ms", 1727485356.005),               # humanizedISO8601DateTime
    ("2024-09-28T01:02:36.250Z", 1727485356.25),                # ISO 8601
    ("2024-09-28T10:02:36+09:00", 1727485356.0),
    (1727485356000, 1727485356.0),                              # unix ms
    ("1727485356000", 1727485356.0),
    ("yesterday", None), ("", None), (None, None), (True, None), (-5, None), (float("nan"), None),
    ("Smarch 28, 2024 1:02am", None), ("2024-02-30@01h02m36s", None),
])
def test_send_dates_read_as_sillytavern_parses_them(value: object, expected: float | None) -> None:
    assert parse_send_date(value) == expected


def test_dates_are_written_as_sillytavern_writes_them() -> None:
    assert humanized_date_time(1727485356.9) == "2024-09-28@01h02m36s"
    assert message_time_stamp(1727485356) == "September 28, 2024 1:02am"
    assert message_time_stamp(1727524920) == "September 28, 2024 12:02pm"
    assert message_time_stamp(1727481720) == "September 28, 2024 12:02am"


# --- bad files ----------------------------------------------------------------------------------

HEADER = SILLYTAVERN_CHAT[0]
USER_LINE = SILLYTAVERN_CHAT[2]


@pytest.mark.parametrize("body, status, code", [
    pytest.param(json.dumps(SILLYTAVERN_CHAT, indent=2).encode(), 400, "invalid_jsonl", id="json-not-jsonl"),
    pytest.param(b"Minji: hi\n\nJisu: hello\n\n", 400, "invalid_jsonl", id="text-export"),
    pytest.param(jsonl([USER_LINE, USER_LINE]), 400, "missing_header", id="no-header"),
    pytest.param(b"[1, 2]\n" + jsonl([USER_LINE]), 400, "invalid_jsonl", id="header-not-an-object"),
    pytest.param(jsonl([HEADER]) + b"\n{broken", 400, "invalid_jsonl", id="broken-line"),
    pytest.param(jsonl([HEADER, {"name": "Jisu", "is_user": True}]), 400, "invalid_message", id="no-mes"),
    pytest.param(jsonl([HEADER, {**USER_LINE, "mes": 42}]), 400, "invalid_message", id="mes-not-text"),
    pytest.param(jsonl([HEADER]) + b"\n" + '{"mes": "caf\xe9"}'.encode("latin-1"), 400,
                 "invalid_jsonl", id="not-utf8"),
    pytest.param(b"", 400, "empty_chat_file", id="empty"),
    pytest.param(b"\n \n", 400, "empty_chat_file", id="blank"),
    pytest.param(jsonl([HEADER]), 400, "no_messages", id="header-only"),
    pytest.param(jsonl([HEADER, SILLYTAVERN_CHAT[4]]), 400, "no_messages", id="only-hidden"),
])
def test_a_bad_file_is_a_clear_4xx_and_stores_nothing(
        client: TestClient, character_id: str, sync_redis: redis.Redis | redis.RedisCluster,
        key_prefix: str, body: bytes, status: int, code: str) -> None:
    _error(_import(client, body, character_id), status, code)
    assert _session_keys(sync_redis, key_prefix) == []


def test_a_multipart_body_without_the_file_field_is_refused(
        client: TestClient, character_id: str) -> None:
    response = client.post(f"{S}/import", params={"character_id": character_id},
                           files={"chat": ("chat.jsonl", jsonl(SILLYTAVERN_CHAT), "text/plain")})
    _error(response, 400, "missing_file")


def test_a_line_too_long_is_413(client: TestClient, character_id: str,
                                settings_env: Callable[..., None],
                                sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> None:
    settings_env(SILLYTAVERN_IMPORT_MAX_LINE_BYTES="1024")
    body = jsonl([HEADER, USER_LINE, {**USER_LINE, "mes": "가" * 400}])
    response = _import(client, body, character_id)
    _error(response, 413, "line_too_long")
    assert "line 3" in response.json()["error"]["message"]
    assert _session_keys(sync_redis, key_prefix) == []


def test_too_many_messages_is_413(client: TestClient, character_id: str,
                                  settings_env: Callable[..., None],
                                  sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> None:
    settings_env(SILLYTAVERN_IMPORT_MAX_MESSAGES="3")
    _error(_import(client, jsonl([HEADER, *[USER_LINE] * 4]), character_id), 413, "too_many_messages")
    assert _session_keys(sync_redis, key_prefix) == []
    assert _imported(client, jsonl([HEADER, *[USER_LINE] * 3]), character_id)["message_count"] == 3


def test_a_body_too_large_is_413(client: TestClient, character_id: str,
                                 settings_env: Callable[..., None],
                                 sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> None:
    settings_env(SILLYTAVERN_IMPORT_MAX_BYTES="2048")
    body = jsonl([HEADER, *[USER_LINE] * 20])
    assert len(body) > 2048
    _error(_import(client, body, character_id), 413, "payload_too_large")  # the body limit, before the route
    assert _session_keys(sync_redis, key_prefix) == []


def test_more_user_messages_than_max_turns_is_refused(
        client: TestClient, character_id: str, settings_env: Callable[..., None],
        sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> None:
    settings_env(MAX_TURNS="1")
    _error(_import(client, jsonl(SILLYTAVERN_CHAT), character_id), 400, "too_many_turns")
    assert _session_keys(sync_redis, key_prefix) == []


def test_import_needs_an_existing_character(
        client: TestClient, sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> None:
    _error(_import(client, jsonl(SILLYTAVERN_CHAT), "no-such-character"), 404, "character_not_found")
    _error(client.post(f"{S}/import", content=jsonl(SILLYTAVERN_CHAT)), 422, "validation_error")
    assert _session_keys(sync_redis, key_prefix) == []


# --- export -------------------------------------------------------------------------------------


def test_export_is_the_jsonl_sillytavern_saves_and_downloads(
        client: TestClient, character_id: str) -> None:
    answer = _imported(client, jsonl(SILLYTAVERN_CHAT), character_id)
    assert client.put("/api/users/me/persona", json={"name": "지수"}).status_code == 200
    export = client.get(f"{S}/{answer['session_id']}/export", params={"format": "sillytavern"})

    assert export.headers["content-type"] == "application/octet-stream"
    disposition = export.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="chat - ')
    assert "filename*=UTF-8''%EB%AF%BC%EC%A7%80%20-%20" in disposition, "민지 - <date>.jsonl"
    assert not export.content.endswith(b"\n")
    header, *lines = _lines(export)
    assert list(header) == ["user_name", "character_name", "create_date", "chat_metadata"]
    assert (header["user_name"], header["character_name"]) == ("지수", "민지")
    assert CREATE_DATE.match(header["create_date"]) and header["chat_metadata"] == {}
    assert [(m["is_user"], m["name"]) for m in lines] == [
        (False, "민지"), (True, "지수"), (False, "민지"), (False, "System"), (True, "지수")]
    for line in lines:
        assert line["is_system"] is False and isinstance(line["extra"], dict)
        assert SEND_DATE.match(line["send_date"]), line["send_date"]
    greeting, user, reply, narrator, _ = lines
    assert greeting["send_date"] == "September 28, 2024 1:02am"
    assert (greeting["swipes"], greeting["swipe_id"]) == (SILLYTAVERN_CHAT[1]["swipes"], 0)
    assert (reply["mes"], reply["swipes"], reply["swipe_id"]) == (
        "따뜻한 라떼 나왔어! *컵을 건넨다*", SILLYTAVERN_CHAT[3]["swipes"], 1)
    assert len(reply["swipe_info"]) == 2
    assert "swipes" not in user and user["mes"] == "라떼 한 잔 주세요."
    assert narrator["extra"] == {"type": "narrator"} and narrator["mes"] == "카페는 십 분 뒤에 문을 닫는다."


def test_export_without_format_is_sillytavern_and_another_format_is_refused(
        client: TestClient, character_id: str) -> None:
    sid = _imported(client, jsonl(SILLYTAVERN_CHAT), character_id)["session_id"]
    assert client.get(f"{S}/{sid}/export").status_code == 200
    _error(client.get(f"{S}/{sid}/export", params={"format": "txt"}), 422, "validation_error")


def test_another_user_cannot_export_your_session(
        auth_on: Callable[..., None], client: TestClient) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    created = client.post("/api/characters", json={"name": "민지"}, headers=alice)
    character_id = created.json()["data"]["id"]
    sid = _imported(client, jsonl(SILLYTAVERN_CHAT), character_id, **alice)["session_id"]
    assert client.get(f"{S}/{sid}/export", headers=alice).status_code == 200
    _error(client.get(f"{S}/{sid}/export", headers=bob), 404, "session_not_found")
    _error(client.get(f"{S}/{sid}", headers=bob), 404, "session_not_found")
    _error(client.get(f"{S}/no-such-session/export", headers=alice), 404, "session_not_found")
    _error(client.get(f"{S}/{sid}/export"), 401, "unauthorized")


# --- round trips --------------------------------------------------------------------------------


def test_a_conversation_held_here_exports_and_imports_back_the_same(
        llm: TaggedLLM, client: TestClient, character_id: str) -> None:
    """Greeting, turns, a regenerated reply with its alternatives, one selected back."""
    opening = client.post("/api/chat", json={"character_id": character_id, "session_id": "s-st",
                                             "tts_enabled": False})
    assert opening.status_code == 200, opening.text
    for n in (1, 2):
        said = client.post("/api/chat", json={"session_id": "s-st", "tts_enabled": False,
                                              "messages": [{"role": "user", "content": f"msg-{n}"}]})
        assert said.status_code == 200, said.text
    assert client.post(f"{S}/s-st/regenerate", json={"tts_enabled": False}).status_code == 200
    assert client.post(f"{S}/s-st/regenerate", json={"tts_enabled": False}).status_code == 200
    original = _messages(client, "s-st")
    chosen = client.post(f"{S}/s-st/messages/{original[-1]['id']}/select", json={"index": 1})
    assert chosen.status_code == 200, chosen.text
    original = _messages(client, "s-st")
    assert original[0]["greeting"] and len(original[-1]["alternatives"]) == 3

    export = client.get(f"{S}/s-st/export")
    copy = _imported(client, export.content, character_id)
    assert copy["session_id"] != "s-st" and copy["message_count"] == len(original)
    assert _transcript(_messages(client, copy["session_id"])) == _transcript(original)
    assert _lines(client.get(f"{S}/{copy['session_id']}/export"))[1:] == _lines(export)[1:]


def test_an_imported_session_goes_on_with_the_next_turn(
        llm: TaggedLLM, client: TestClient, character_id: str) -> None:
    sid = _imported(client, jsonl(SILLYTAVERN_CHAT), character_id)["session_id"]
    said = client.post("/api/chat", json={"session_id": sid, "tts_enabled": False,
                                          "messages": [{"role": "user", "content": "msg-9"}]})
    assert said.status_code == 200, said.text
    assert said.json()["data"]["content"].startswith("re msg-9")
    prompt = " ".join(m["content"] for m in llm.chats[-1])
    assert "따뜻한 라떼 나왔어!" in prompt and "라떼 여기! 시럽은?" not in prompt, "the selected swipe"
    assert "카페는 십 분 뒤에 문을 닫는다." in prompt and "(hidden with /hide)" not in prompt
    assert len(_messages(client, sid)) == 7
    assert client.get(f"{S}/{sid}").json()["data"]["user_turns"] == 3
    listed = client.get(S).json()["data"]["items"]
    assert [(i["session_id"], i["character_id"], i["message_count"]) for i in listed] == [
        (sid, character_id, 7)], "an imported conversation is in its user's list"


def test_twenty_thousand_messages_import_and_export(
        client: TestClient, character_id: str, settings_env: Callable[..., None]) -> None:
    """SILLYTAVERN_IMPORT_MAX_MESSAGES's default, in lines as `importOobaChat` writes them
    (`{name, is_user, send_date, mes}`), through a MAX_BODY_BYTES raised for it; one more
    message is 413."""
    settings_env(MAX_BODY_BYTES=str(16 * 1024 * 1024))
    lines = [{"name": "Jisu" if n % 2 else "Minji", "is_user": bool(n % 2),
              "send_date": "2024-9-28 @01h 02m 36s 5ms", "mes": f"message {n}"}
             for n in range(20_000)]
    started = time.perf_counter()
    answer = _imported(client, jsonl([HEADER, *lines]), character_id)
    assert answer["message_count"] == 20_000 and answer["user_turns"] == 10_000
    exported = _lines(client.get(f"{S}/{answer['session_id']}/export"))
    assert len(exported) == 20_001 and exported[-1]["mes"] == "message 19999"
    assert time.perf_counter() - started < 30
    _error(_import(client, jsonl([HEADER, *lines, USER_LINE]), character_id), 413, "too_many_messages")


# --- property: export then import ---------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
NAME = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
ROLES: list[Role] = ["user", "assistant", "system"]


@st.composite
def transcripts(draw: st.DrawFn) -> list[StoredMessage]:
    """Transcripts as the store holds them: alternatives only on replies (2 to 10 of them,
    `content` the selected one), the greeting a leading reply."""
    messages = []
    for n in range(draw(st.integers(0, 8))):
        role: Role = draw(st.sampled_from(ROLES))
        at = draw(st.floats(0, 4_102_444_800, allow_nan=False))
        content = draw(TEXT)
        alternatives, selected = None, None
        if role == "assistant" and draw(st.booleans()):
            alternatives = draw(st.lists(TEXT, min_size=2, max_size=MAX_ALTERNATIVES))
            selected = draw(st.integers(0, len(alternatives) - 1))
            content = alternatives[selected]
        messages.append(StoredMessage(
            id=f"m{n}", role=role, content=content, at=round(at, 3),
            tokens=message_tokens(content), greeting=n == 0 and role == "assistant",
            alternatives=alternatives, selected=selected))
    return messages


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transcripts(), NAME, NAME, st.floats(0, 4_102_444_800, allow_nan=False))
def test_export_then_import_gives_the_same_transcript(
        messages: list[StoredMessage], user_name: str, character_name: str, created_at: float) -> None:
    if not messages:
        return  # a header alone is refused (no_messages), as above
    body = chat_jsonl(messages, user_name=user_name, character_name=character_name,
                      created_at=created_at)
    limits = ImportLimits(max_bytes=len(body), max_messages=len(messages), max_line_bytes=len(body))
    imported = read_chat_file(body, "application/octet-stream", limits).messages

    def kept(message: StoredMessage) -> tuple[Any, ...]:
        return (message.role, message.content, message.alternatives, message.selected,
                message.greeting, message.tokens)

    assert [kept(m) for m in imported] == [kept(m) for m in messages]
    assert [m.at for m in imported] == [math.floor(m.at / 60) * 60 for m in messages], \
        "send_date is to the minute"
    assert len({m.id for m in imported}) == len(imported)

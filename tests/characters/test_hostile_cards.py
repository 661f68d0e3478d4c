"""Hostile cards (issue 29, findings 1 to 4): a card's text, an upload's parts, a card's
nesting and a lorebook's regex keys can neither stall other users nor turn a stored
character, a list page or a turn into a 500.

Stalls are measured as another user's latency while the hostile request runs, against
Server B in its own process (tests/support/server_process.py), so this process's own
threads do not share its interpreter; the LLM is the scripted upstream over HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from roleplay.characters.macros import MacroNames, replace_macros
from roleplay.characters.model import Character, CharacterCreate
from tests.support.card_files import V1, chunk, text_chunk, tiny_png_chunks, v2_card
from tests.support.server_process import server_b_process
from tests.support.sign_in import bearer

STALL_S = 0.5
"""The most another user may wait behind one hostile request (the issue's goal)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def server_b(fake_upstream: Any) -> Iterator[str]:
    """Server B in a process of its own, on the test's Redis and the scripted upstream."""
    with server_b_process({}) as served:
        yield served.base_url


def _others_worst_wait(url: str, hostile: Callable[[httpx.Client], httpx.Response]
                       ) -> tuple[httpx.Response, float]:
    """Runs `hostile` while another user reads a small character over and over; answers
    the hostile response and the other user's slowest read."""
    with httpx.Client(base_url=url, timeout=60) as other:
        created = other.post("/api/characters", json={"name": "bystander"})
        assert created.status_code == 201, created.text
        probe = f"/api/characters/{created.json()['data']['id']}"
        other.get(probe)
        worst = 0.0
        with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=120) as attacker:
            answer = pool.submit(hostile, attacker)
            while not answer.done():
                started = time.perf_counter()
                assert other.get(probe).status_code == 200
                worst = max(worst, time.perf_counter() - started)
                time.sleep(0.02)
            return answer.result(), worst


def _error(response: httpx.Response | Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def _deep(depth: int, leaf: str = "1") -> str:
    """JSON of `depth` nested objects, built as text (json.dumps itself gives up near 1,000)."""
    return '{"a":' * depth + leaf + "}" * depth


def _card_with_extensions(extensions_json: str) -> bytes:
    """A V2 card whose `extensions` are the given JSON text."""
    head = json.dumps({"spec": "chara_card_v2", "spec_version": "2.0",
                       "data": {**V1, "extensions": "__EXT__"}})
    return head.replace('"__EXT__"', extensions_json).encode()


def _png_with(card: bytes) -> bytes:
    return (PNG_SIGNATURE + b"".join(tiny_png_chunks())
            + text_chunk("chara", base64.b64encode(card).decode()) + chunk(b"IEND", b""))


def _charx_with(card: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", card)
    return buffer.getvalue()


def _import(client: TestClient | httpx.Client, body: bytes, content_type: str = "application/json",
            **headers: str) -> Any:
    return client.post("/api/characters/import", content=body,
                       headers={"content-type": content_type, **headers})


# 1. A card's text can freeze the server


def test_macro_replacement_is_linear_in_the_text() -> None:
    """On main `{{//` × 20,000 took about 6 s: each opening rescanned the rest for `}}`."""
    names = MacroNames(char="민지", user="철수")
    started = time.perf_counter()
    assert replace_macros("{{//" * 200_000, names) == "{{//" * 200_000
    assert time.perf_counter() - started < 0.5
    assert replace_macros("a{{// note }}b" * 3 + "{{char}} {{//", names) == "ab" * 3 + "민지 {{//"
    assert replace_macros("{{//a{{// b}}{{user}}", names) == "철수", "a comment ends at its first }}"
    assert replace_macros("{{// x}} <BOT> {{//", names) == " 민지 {{//"


def test_a_lorebook_of_unclosed_comments_does_not_stall_other_users(
        server_b: str, fake_upstream: Any) -> None:
    book = {"entries": [{"keys": [], "constant": True, "content": "{{//" * 20_000}]}
    card = v2_card(character_book=book, description="{{//" * 1_000)
    with httpx.Client(base_url=server_b, timeout=60) as owner:
        character_id = _import(owner, json.dumps(card).encode()).json()["data"]["id"]

    def turn(client: httpx.Client) -> httpx.Response:
        return client.post("/api/chat", json={"character_id": character_id, "tts_enabled": False,
                                              "messages": [{"role": "user", "content": "안녕"}]})

    answer, worst = _others_worst_wait(server_b, turn)
    assert answer.status_code == 200, answer.text
    assert worst < STALL_S, f"another user waited {worst:.2f} s behind one turn"


def _hangul(count: int, seed: int) -> str:
    return "".join(chr(0xAC00 + (seed * 7919 + n * 104729) % 11172) for n in range(count))


def test_a_turns_lorebook_work_is_bounded_whatever_the_book(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On main 100,000 keys that never match took seconds a turn, and 5,000 constant
    entries of Hangul (7 MB) were all tokenized, every turn."""
    from roleplay.characters.lorebook import activation
    from roleplay.characters.lorebook.activation import select_entries
    from roleplay.characters.lorebook.model import CharacterBook

    names = MacroNames(char="민지", user="철수")
    many_keys = CharacterBook.model_validate({"entries": [
        {"keys": [f"없는 열쇠 {n}-{k}" for k in range(500)], "content": "x"} for n in range(200)]})
    started = time.perf_counter()
    assert select_entries(many_keys, [_hangul(100_000, 1)], names, 1_000).fired == ()
    assert time.perf_counter() - started < 1.0
    constant = CharacterBook.model_validate({"entries": [
        {"constant": True, "content": _hangul(1_500, n), "priority": n} for n in range(5_000)]})
    # The whole book is scanned (the 300 ms scan budget can stop it on a loaded CI machine,
    # and the entry reported first is then one the scan reached): what stays bounded is the
    # tokenizing, and the report.
    monkeypatch.setattr(activation, "SCAN_BUDGET_S", 30.0)
    started = time.perf_counter()
    selection = select_entries(constant, ["안녕"], names, 2_000)
    assert time.perf_counter() - started < 1.0
    assert [e.index for e in selection.fired] == [] and len(selection.over_budget) == 100
    assert selection.over_budget[0].index == 4_999 and selection.over_budget[0].tokens > 2_000


# 2. A multipart import freezes the server


def _many_parts(count: int, file_body: bytes) -> tuple[bytes, str]:
    empty = b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n'
    body = (empty * count + b'--B\r\nContent-Disposition: form-data; name="file"; '
            b'filename="c.json"\r\nContent-Type: application/json\r\n\r\n' + file_body
            + b"\r\n--B--\r\n")
    return body, "multipart/form-data; boundary=B"


def test_a_body_of_thousands_of_parts_is_refused_without_stalling_other_users(server_b: str) -> None:
    """On main 30,000 empty parts before `file` (1.7 MB) held the event loop for 4 s."""
    body, content_type = _many_parts(30_000, json.dumps(V1).encode())

    def upload(client: httpx.Client) -> httpx.Response:
        answer: httpx.Response = _import(client, body, content_type)
        return answer

    answer, worst = _others_worst_wait(server_b, upload)
    assert "MULTIPART_MAX_PARTS" in _error(answer, 413, "too_many_parts")
    assert worst < STALL_S, f"another user waited {worst:.2f} s behind one upload"


def test_the_part_bound_covers_every_upload_and_a_few_fields_are_fine(client: TestClient) -> None:
    body, content_type = _many_parts(16, json.dumps(V1).encode())
    _error(_import(client, body, content_type), 413, "too_many_parts")
    body, content_type = _many_parts(15, json.dumps(V1).encode())
    assert _import(client, body, content_type).status_code == 201
    character_id = client.get("/api/characters").json()["data"]["items"][0]["id"]
    lorebook, content_type = _many_parts(40, b'{"entries": []}')
    _error(client.put(f"/api/characters/{character_id}/lorebook", content=lorebook,
                      headers={"content-type": content_type}), 413, "too_many_parts")
    chat_file, content_type = _many_parts(40, b"{}")
    _error(client.post("/api/chat/sessions/import", params={"character_id": character_id},
                       content=chat_file, headers={"content-type": content_type}),
           413, "too_many_parts")


def test_a_multipart_field_is_read_as_browsers_and_curl_send_it(client: TestClient) -> None:
    card = json.dumps(V1).encode()
    quoted = (b'preamble\r\n--b q\r\nContent-Disposition: form-data; name="file"; '
              b'filename="a \\"q\\".json"\r\nContent-Type: application/json; charset=utf-8'
              b"\r\n\r\n" + card + b"\r\n--b q--\r\nepilogue")
    assert _import(client, quoted, 'multipart/form-data; boundary="b q"').status_code == 201
    encoded = (b'--B\r\nContent-Disposition: form-data; name="file"\r\nContent-Type: '
               b'application/json\r\nContent-Transfer-Encoding: base64\r\n\r\n'
               + base64.b64encode(card) + b"\r\n--B--\r\n")
    assert _import(client, encoded, "multipart/form-data; boundary=B").status_code == 201
    _error(_import(client, b"--B\r\nno end", "multipart/form-data; boundary=B"), 400,
           "invalid_multipart")
    _error(_import(client, card, "multipart/form-data"), 400, "invalid_multipart")


# 3. A card can become unreadable and poison the list


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda card: (card, "application/json"), id="json"),
    pytest.param(lambda card: (_png_with(card), "image/png"), id="png"),
    pytest.param(lambda card: (_charx_with(card), "application/zip"), id="charx"),
])
@pytest.mark.parametrize("depth", [40, 200, 1_000, 5_000])
def test_a_card_nested_past_the_depth_limit_is_a_400(
        client: TestClient, wrap: Callable[[bytes], tuple[bytes, str]], depth: int) -> None:
    """On main 200 levels imported (201) and every read of it was then a 500; 1,000 levels
    were a 500 at import."""
    body, content_type = wrap(_card_with_extensions(_deep(depth)))
    assert "CARD_MAX_DEPTH=32" in _error(_import(client, body, content_type), 400, "card_too_deep")
    assert client.get("/api/characters").json()["data"]["items"] == [], "nothing is stored"


def test_the_depth_limit_is_a_setting_and_a_card_within_it_imports(
        client: TestClient, settings_env: Callable[..., None]) -> None:
    assert _import(client, _card_with_extensions(_deep(25))).status_code == 201
    settings_env(CARD_MAX_DEPTH="8")
    message = _error(_import(client, _card_with_extensions(_deep(25))), 400, "card_too_deep")
    assert "CARD_MAX_DEPTH=8" in message and "data.extensions.a.a" in message


def test_every_write_checks_nesting_text_and_numbers(client: TestClient) -> None:
    """Create, change and lorebook attach as well as import; and text or numbers a store
    could not write back (a lone surrogate was a 500 at import on main)."""
    deep = json.loads(_deep(40))
    _error(client.post("/api/characters", json={"name": "a", "extensions": deep}), 400,
           "card_too_deep")
    character_id = client.post("/api/characters", json={"name": "a"}).json()["data"]["id"]
    _error(client.patch(f"/api/characters/{character_id}", json={"extensions": deep}), 400,
           "card_too_deep")
    lorebook = ('{"spec": "lorebook_v3", "data": {"entries": [' + _deep(1_000) + "]}}").encode()
    _error(client.put(f"/api/characters/{character_id}/lorebook", content=lorebook,
                      headers={"content-type": "application/json"}), 400, "card_too_deep")
    _error(_import(client, _card_with_extensions('{"note": "\\ud800"}')), 400, "invalid_card_text")
    _error(_import(client, _card_with_extensions('{"n": ' + "9" * 40 + "}")), 400,
           "invalid_card_number")
    _error(_import(client, _card_with_extensions('{"n": 1e300}')), 400, "invalid_card_number")
    _error(_import(client, _card_with_extensions('{"n": NaN}')), 400, "invalid_card_number")
    many = "[" + ",".join(["0"] * 200_001) + "]"
    _error(_import(client, _card_with_extensions('{"n": ' + many + "}")), 400, "card_too_complex")
    assert client.get(f"/api/characters/{character_id}").json()["data"]["extensions"] == {}


def _store_raw(sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str,
               character: Character, raw: str) -> None:
    """Writes a character's JSON as an older server could have (no checks), with its
    index entry, as `RedisCharacterStore.create` lays them out."""
    sync_redis.set(f"{key_prefix}character:{character.id}", raw)
    created_ms = int(character.created_at.timestamp() * 1000)
    sync_redis.zadd(f"{key_prefix}characters", {f"{created_ms:013d}:{character.id}": 0})


def _unreadable(owner: str) -> tuple[Character, str]:
    """A character stored 250 levels deep, as main imported them: pydantic's JSON reader
    gives up at 200."""
    character = Character.new(CharacterCreate(name="poison"), owner=owner)
    raw = character.model_dump_json().replace('"extensions":{}', '"extensions":' + _deep(250))
    return character, raw


def test_a_stored_character_that_does_not_load_answers_4xx_and_stays_out_of_lists(
        auth_on: Callable[..., None], client: TestClient, fake_upstream: Any,
        sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """On main its read, export, a chat with it and the owner's DELETE were 500s, and so
    was every list page that held it, for every user."""
    mallory, alice = bearer("mallory"), bearer("alice")
    before = client.post("/api/characters", json={"name": "before"}, headers=alice)
    character, raw = _unreadable("mallory")
    _store_raw(sync_redis, key_prefix, character, raw)
    after = client.post("/api/characters", json={"name": "after"}, headers=alice)
    with caplog.at_level(logging.WARNING, logger="roleplay.characters.store"):
        page = client.get("/api/characters", headers=alice)
    assert page.status_code == 200
    assert [item["id"] for item in page.json()["data"]["items"]] == [
        before.json()["data"]["id"], after.json()["data"]["id"]]
    assert character.id in caplog.text and "left out of a list" in caplog.text

    url = f"/api/characters/{character.id}"
    assert "owner may delete it" in _error(client.get(url, headers=alice), 409, "character_unreadable")
    _error(client.get(f"{url}/export", headers=mallory), 409, "character_unreadable")
    _error(client.post("/api/chat", headers=alice, json={
        "character_id": character.id, "tts_enabled": False,
        "messages": [{"role": "user", "content": "hi"}]}), 409, "character_unreadable")
    _error(client.delete(url, headers=alice), 403, "forbidden")
    deleted = client.delete(url, headers=mallory)
    assert deleted.status_code == 200, deleted.text
    _error(client.get(url, headers=mallory), 404, "character_not_found")
    assert sync_redis.zcard(f"{key_prefix}characters") == 2


def test_an_unreadable_character_too_deep_even_for_json_can_still_be_deleted_by_its_owner(
        auth_on: Callable[..., None], client: TestClient,
        sync_redis: redis.Redis | redis.RedisCluster, key_prefix: str) -> None:
    character = Character.new(CharacterCreate(name="poison"), owner="mallory")
    nested_owner = '{"owner":"alice",' * 1_500 + '"x":1' + "}" * 1_500
    raw = character.model_dump_json().replace('"extensions":{}', '"extensions":' + nested_owner)
    _store_raw(sync_redis, key_prefix, character, raw)
    url = f"/api/characters/{character.id}"
    _error(client.delete(url, headers=bearer("alice")), 403, "forbidden")
    assert client.delete(url, headers=bearer("mallory")).status_code == 200
    assert sync_redis.zcard(f"{key_prefix}characters") == 0


def test_dynamodb_items_that_do_not_load_are_left_out_and_deletable(
        characters_table: str, auth_on: Callable[..., None], client: TestClient) -> None:
    import boto3

    kept = client.post("/api/characters", json={"name": "kept"}, headers=bearer("alice"))
    character = Character.new(CharacterCreate(name="poison"), owner="mallory")
    item = {**json.loads(character.model_dump_json()), "name": "x" * 500}
    boto3.resource("dynamodb").Table(characters_table).put_item(Item=item)
    items = client.get("/api/characters", headers=bearer("alice")).json()["data"]["items"]
    assert [i["id"] for i in items] == [kept.json()["data"]["id"]]
    url = f"/api/characters/{character.id}"
    _error(client.get(url, headers=bearer("alice")), 409, "character_unreadable")
    _error(client.delete(url, headers=bearer("alice")), 403, "forbidden")
    assert client.delete(url, headers=bearer("mallory")).status_code == 200
    _error(client.get(url, headers=bearer("alice")), 404, "character_not_found")


# 4. A lorebook regex key can break every turn


def _regex_book(*keys: str, **entry: Any) -> dict[str, Any]:
    return {"entries": [{"keys": list(keys), "use_regex": True, "content": "regex lore", **entry},
                        {"keys": ["안녕"], "content": "plain lore"}]}


NESTED_300 = "(a" * 300 + ")" * 300 + "a"
"""300 nested groups, 901 characters: RecursionError in the regex module's parser on
every turn on main."""
EXPANDING = "(?:(?:a{999}){999}){999}"
"""24 characters the regex module expands at compile until the process is out of memory."""


@pytest.mark.parametrize("key", [NESTED_300, EXPANDING, "(?:a{1000}){1000}", "(unclosed",
                                 "/(?:a{1000}){101}/i"])
def test_a_regex_key_that_cannot_compile_is_refused_when_saved_naming_it(
        client: TestClient, key: str) -> None:
    card = v2_card(character_book=_regex_book("dragon", key))
    message = _error(_import(client, json.dumps(card).encode()), 400, "invalid_lorebook_key")
    assert "character_book.entries.0.keys.1" in message and key[:20] in message
    character_id = client.post("/api/characters", json={"name": "a"}).json()["data"]["id"]
    url = f"/api/characters/{character_id}"
    _error(client.patch(url, json={"character_book": _regex_book(key)}), 400, "invalid_lorebook_key")
    lorebook = json.dumps({"spec": "lorebook_v3", "data": _regex_book(secondary_keys=[key],
                                                                      selective=True)})
    message = _error(client.put(f"{url}/lorebook", content=lorebook.encode(),
                                headers={"content-type": "application/json"}),
                     400, "invalid_lorebook_key")
    assert "entries.0.secondary_keys.0" in message
    assert client.get(url).json()["data"]["character_book"] is None


def test_sane_regex_keys_are_kept(client: TestClient) -> None:
    card = v2_card(character_book=_regex_book(r"/dra(g|k)on/i", r"\d{1,3}(\.\d{1,3}){3}",
                                              r"[가-힣]{2,10}님"))
    assert _import(client, json.dumps(card).encode()).status_code == 201


def test_a_stored_regex_key_that_cannot_compile_is_skipped_at_turn_time(
        client: TestClient, fake_upstream: Any, sync_redis: redis.Redis | redis.RedisCluster,
        key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """Stored before keys were checked: on main every turn with it was a 500."""
    fields = CharacterCreate.model_validate({"name": "민지", "character_book": _regex_book(
        NESTED_300, "(?:a{1000}){1000}", "안녕")})
    character = Character.new(fields, owner="anonymous")
    _store_raw(sync_redis, key_prefix, character, character.model_dump_json())
    with caplog.at_level(logging.WARNING, logger="roleplay.characters.lorebook"):
        for _ in range(2):
            answer = client.post("/api/chat", json={
                "character_id": character.id, "tts_enabled": False,
                "messages": [{"role": "user", "content": "안녕"}]})
            assert answer.status_code == 200, answer.text
    session = client.get(f"/api/chat/sessions/{answer.json()['data']['session_id']}").json()
    assert [e["index"] for e in session["data"]["lorebook"]["fired"]] == [0, 1], \
        "the third key still fires its entry"
    skipped = [r for r in caplog.records if "regex key skipped" in r.getMessage()]
    assert len(skipped) == 2, "each bad key is logged once, not on every turn"


def test_a_key_that_would_exhaust_memory_is_never_compiled() -> None:
    """On main a turn compiled `EXPANDING` and the process ran out of memory."""
    from roleplay.characters.lorebook.regex_keys import compiled_key, key_problem

    started = time.perf_counter()
    assert "multiply past" in str(key_problem(EXPANDING, case_sensitive=False))
    assert compiled_key(EXPANDING, False) is None
    assert compiled_key(r"/dra(g|k)on/i", True).search("DRAKON")
    assert time.perf_counter() - started < 0.1


def test_a_list_page_of_large_characters_is_cut_by_bytes_and_goes_on(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred 8 MB characters on one page were 800 MB read and written on the event loop."""
    from roleplay.characters import store

    monkeypatch.setattr(store, "MAX_PAGE_BYTES", 6_000)
    ids = [client.post("/api/characters", json={"name": f"c{n}", "persona": "p" * 2_000}
                       ).json()["data"]["id"] for n in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/api/characters", params={"limit": 100, **(
            {"cursor": cursor} if cursor else {})}).json()["data"]
        assert 1 <= len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3

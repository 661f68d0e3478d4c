"""Conversations that last (issue 31): two clocks, an idle conversation moved out of Redis
to the cold store and brought back whole on its next use, exactly once under races, and
never lost whatever step a crash stops the move at. On a real Redis (and the cluster
pass), the real local cold store (files under DATA_DIR) and S3 through moto, over the
scripted upstream.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from roleplay.core.redis_keys import redis_keys
from roleplay.core.settings import get_settings
from roleplay.memory.recall import forget_cached
from roleplay.sessions import conversation_archive, conversation_index
from roleplay.sessions.cold_store import cold_store
from tests.support.fake_llm import FakeLLM
from tests.support.session_keys import session_key

HOT_S = 3600
CONTEXT = 1024


@pytest.fixture
def llm(fake_upstream: FakeLLM, settings_env: Callable[..., None]) -> FakeLLM:
    """A small context where a few turns fold into a summary and episodes."""
    settings_env(MAX_CONTEXT_TOKENS=str(CONTEXT), RECENT_TURNS_TO_KEEP="4", SUMMARY_RETRY_AFTER_S="0",
                 MEMORY_TOKENS="200", SESSION_HOT_TTL_S=str(HOT_S))
    forget_cached()
    return fake_upstream


@pytest.fixture
def browser(client: TestClient) -> TestClient:
    """A client holding its anonymous cookie before its first turn, as a browser that
    loaded the playground does: its conversations are listed under the cookie. (A first
    turn without one is filed under the address, and listed under the cookie once the
    cookie takes a turn in it: `test_conversation_list`.)"""
    client.get("/api/chat/sessions")
    assert client.cookies
    return client


def _turn(client: TestClient, sid: str, text: str, **extra: object) -> dict[str, Any]:
    response = client.post("/api/chat", json={"session_id": sid, "max_tokens": 64, "tts_enabled": False,
                                             "messages": [{"role": "user", "content": text}], **extra})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _conversation(client: TestClient, sid: str, turns: int = 10) -> None:
    for n in range(turns):
        _turn(client, sid, f"{n}번째 이야기: 오늘은 카페에서 라떼를 마시며 창밖의 비를 한참 바라봤어.")


def _state(sync_redis: redis.Redis, key: str) -> dict[str, Any]:
    """Everything Redis holds of a conversation."""
    keys = redis_keys()
    return {"meta": sync_redis.hgetall(keys.session(key)),
            "messages": sync_redis.lrange(keys.session_messages(key), 0, -1),
            "ids": sync_redis.hgetall(keys.session_ids(key)),
            "episodes": sync_redis.hgetall(keys.session_episodes(key)),
            "lorebook": sync_redis.get(keys.session_lorebook(key))}


def _sweep(after_s: float = HOT_S + 60) -> dict[str, int]:
    return asyncio.run(conversation_archive.sweep_idle(time.time() + after_s))


def _hot_keys(sync_redis: redis.Redis, key: str) -> int:
    keys = redis_keys()
    return int(sync_redis.exists(keys.session(key), keys.session_messages(key), keys.session_ids(key)))


def test_the_cap_and_the_conversation_keep_separate_clocks(
        settings_env: Callable[..., None], llm: FakeLLM, browser: TestClient,
        sync_redis: redis.Redis) -> None:
    settings_env(SESSION_TTL_S="120")
    assert get_settings().active_ttl_s == 120, "the old name still sets the cap's clock"
    _turn(browser, "clocks", "안녕")
    key = session_key(browser, "clocks")
    ttl = sync_redis.ttl(redis_keys().session(key))
    assert ttl > 89 * 86_400, "a conversation lives its retention (90 days), not the cap's hour"
    members = sync_redis.zrange(redis_keys().active_users, 0, -1, withscores=True)
    assert members, "the user holds a place under the cap"


def test_retention_zero_keeps_a_conversation_until_deleted(
        settings_env: Callable[..., None], llm: FakeLLM, browser: TestClient,
        sync_redis: redis.Redis) -> None:
    settings_env(CONVERSATION_RETENTION_DAYS="0")
    _turn(browser, "forever", "안녕")
    assert sync_redis.ttl(redis_keys().session(session_key(browser, "forever"))) > 36_000 * 86_400
    _sweep(after_s=400 * 86_400)
    assert browser.get("/api/chat/sessions/forever").status_code == 200


def test_an_idle_conversation_moves_cold_and_comes_back_whole(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis, tmp_path: Path) -> None:
    _conversation(browser, "idle")
    browser.post("/api/chat/sessions/idle/pins", json={"text": "민지는 고양이를 좋아한다"})
    key = session_key(browser, "idle")
    before = _state(sync_redis, key)
    assert before["meta"]["summary_upto"] not in (None, "-1"), "the summary folded some turns"
    assert before["episodes"], "and memory kept them as episodes"

    assert _sweep(after_s=60)["archived"] == 0, "a conversation used within the hot window stays"
    assert _sweep()["archived"] == 1
    assert _hot_keys(sync_redis, key) == 0, "Redis no longer holds it"
    assert sync_redis.exists(redis_keys().session_cold(key))
    copy = asyncio.run(cold_store().get(key))
    assert copy is not None and gzip.decompress(copy)
    assert list((tmp_path / "data" / "conversations").rglob(key + "*")), "under DATA_DIR"

    view = browser.get("/api/chat/sessions/idle")
    assert view.status_code == 200, view.text
    after = _state(sync_redis, key)
    assert after == before, "transcript, summary, watermark, pins, ids, memory and lore all back"
    assert not sync_redis.exists(redis_keys().session_cold(key))
    assert sync_redis.ttl(redis_keys().session_messages(key)) > 89 * 86_400


def test_a_turn_on_a_cold_conversation_goes_on_from_where_it_was(
        llm: FakeLLM, browser: TestClient) -> None:
    _turn(browser, "resume", "내 이름은 하늘이야")
    _turn(browser, "resume", "오늘 비가 와")
    _sweep()
    reply = _turn(browser, "resume", "내 이름 기억해?")
    prompt = " ".join(m["content"] for m in llm.chat_prompts[-1])
    assert "하늘" in prompt, "the earlier turns are back in the prompt"
    assert browser.get("/api/chat/sessions/resume").json()["data"]["message_count"] == 6
    assert reply["session_id"] == "resume"


def test_a_retry_of_the_last_turn_after_the_move_gets_the_stored_reply(
        llm: FakeLLM, browser: TestClient) -> None:
    first = browser.post("/api/chat", json={"session_id": "retry", "tts_enabled": False,
                                           "messages": [{"role": "user", "content": "안녕"}]},
                        headers={"Idempotency-Key": "k-1"}).json()["data"]
    _sweep()
    again = browser.post("/api/chat", json={"session_id": "retry", "tts_enabled": False,
                                           "messages": [{"role": "user", "content": "안녕"}]},
                        headers={"Idempotency-Key": "k-1"}).json()["data"]
    assert again["replayed"] and again["content"] == first["content"]


def test_requests_racing_for_a_cold_conversation_restore_it_once(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis) -> None:
    _conversation(browser, "race", turns=4)
    key = session_key(browser, "race")
    before = _state(sync_redis, key)
    _sweep()

    async def racing() -> list[bool]:
        return await asyncio.gather(*[conversation_archive.bring_back(key) for _ in range(8)])

    assert all(asyncio.run(racing()))
    assert _state(sync_redis, key) == before, "restored once: no message written twice"


def test_the_move_leaves_a_conversation_used_meanwhile_in_redis(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn lands between the copy and the delete: the delete sees the change and stays
    its hand, so the turn's messages are not lost with the hot keys."""
    _turn(browser, "meanwhile", "첫 번째")
    key = session_key(browser, "meanwhile")
    store = cold_store()
    real_put = store.put

    async def put_then_turn(name: str, data: bytes) -> None:
        await real_put(name, data)
        await asyncio.to_thread(_turn, browser, "meanwhile", "두 번째")

    monkeypatch.setattr(store, "put", put_then_turn)
    counts = _sweep()
    assert counts["archived"] == 0 and counts["skipped"] == 1
    assert _hot_keys(sync_redis, key) == 3
    assert browser.get("/api/chat/sessions/meanwhile").json()["data"]["message_count"] == 4


def test_a_crash_before_the_delete_leaves_the_conversation_whole_in_redis(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _conversation(browser, "crash-a", turns=3)
    key = session_key(browser, "crash-a")
    before = _state(sync_redis, key)

    async def dies(*_: object) -> None:
        raise ConnectionError("process killed between the copy and the delete")

    monkeypatch.setattr(conversation_archive, "_DROP_HOT_SCRIPT", dies)
    assert _sweep()["failed"] == 1
    assert _state(sync_redis, key) == before
    monkeypatch.undo()
    assert _sweep()["archived"] == 1, "the next sweep moves it"


def test_a_crash_after_the_delete_leaves_it_whole_in_the_cold_store(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis) -> None:
    """The keys went and the marker was left, but the indexes were never updated."""
    _conversation(browser, "crash-b", turns=3)
    key = session_key(browser, "crash-b")
    before = _state(sync_redis, key)
    entry = sync_redis.zrange(redis_keys().hot_conversations, 0, -1)[0]
    outcome, cold_entry = asyncio.run(conversation_archive.archive(entry))
    assert outcome == "archived"
    assert _sweep()["skipped"] == 1, "the sweep finds it cold and only fixes the indexes"
    assert sync_redis.zscore(redis_keys().cold_conversations, cold_entry) is not None
    assert sync_redis.zscore(redis_keys().hot_conversations, entry) is None
    assert browser.get("/api/chat/sessions/crash-b").status_code == 200
    assert _state(sync_redis, key) == before


def test_a_missing_or_damaged_copy_fails_that_conversation_alone(
        llm: FakeLLM, browser: TestClient) -> None:
    for sid in ("lost", "damaged", "fine"):
        _turn(browser, sid, f"{sid} 대화")
    keys = {sid: session_key(browser, sid) for sid in ("lost", "damaged", "fine")}
    _sweep()
    asyncio.run(cold_store().delete(keys["lost"]))
    asyncio.run(cold_store().put(keys["damaged"], b"not gzip"))

    for sid in ("lost", "damaged"):
        answer = browser.get(f"/api/chat/sessions/{sid}")
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "conversation_unreadable"
        turn = browser.post("/api/chat", json={"session_id": sid, "tts_enabled": False,
                                              "messages": [{"role": "user", "content": "안녕"}]})
        assert turn.status_code == 409, "never a new conversation over the lost one"
    listing = browser.get("/api/chat/sessions")
    assert listing.status_code == 200
    assert {item["session_id"] for item in listing.json()["data"]["items"]} == {"lost", "damaged", "fine"}
    assert browser.get("/api/chat/sessions/fine").status_code == 200


def test_deleting_a_cold_conversation_removes_it_everywhere(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis) -> None:
    _turn(browser, "gone", "안녕")
    key = session_key(browser, "gone")
    _sweep()
    assert browser.delete("/api/chat/sessions/gone").status_code == 200
    assert asyncio.run(cold_store().get(key)) is None
    assert not sync_redis.exists(redis_keys().session_cold(key))
    assert _hot_keys(sync_redis, key) == 0
    assert browser.get("/api/chat/sessions").json()["data"]["items"] == []
    assert sync_redis.zcard(redis_keys().hot_conversations) == 0
    assert sync_redis.zcard(redis_keys().cold_conversations) == 0


def test_cold_conversations_past_the_retention_are_forgotten(
        settings_env: Callable[..., None], llm: FakeLLM, browser: TestClient,
        sync_redis: redis.Redis) -> None:
    settings_env(CONVERSATION_RETENTION_DAYS="30")
    _turn(browser, "old", "안녕")
    key = session_key(browser, "old")
    _sweep()
    assert _sweep(after_s=29 * 86_400)["expired"] == 0, "kept until the retention"
    assert _sweep(after_s=31 * 86_400)["expired"] == 1
    assert asyncio.run(cold_store().get(key)) is None
    assert browser.get("/api/chat/sessions").json()["data"]["items"] == []
    assert browser.get("/api/chat/sessions/old").status_code == 404


@pytest.fixture
def conversation_bucket(aws: None, settings_env: Callable[..., None]) -> Iterator[str]:
    import boto3

    boto3.client("s3").create_bucket(Bucket="conversations-test")
    settings_env(CONVERSATION_BUCKET="conversations-test")
    yield "conversations-test"


def test_deployed_the_cold_store_is_the_stacks_s3_bucket(
        conversation_bucket: str, llm: FakeLLM, browser: TestClient,
        sync_redis: redis.Redis) -> None:
    import boto3

    _conversation(browser, "s3", turns=3)
    key = session_key(browser, "s3")
    before = _state(sync_redis, key)
    assert _sweep()["archived"] == 1
    listed = boto3.client("s3").list_objects_v2(Bucket=conversation_bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"conversations/{key}"]
    assert browser.get("/api/chat/sessions/s3").status_code == 200
    assert _state(sync_redis, key) == before


def test_the_user_list_survives_in_the_users_slot(llm: FakeLLM, browser: TestClient,
                                                  sync_redis: redis.Redis) -> None:
    _turn(browser, "slot", "안녕")
    entry = sync_redis.zrange(redis_keys().hot_conversations, 0, -1)[0]
    key, session_id = conversation_index.parse_member(entry)
    assert (key, session_id) == (session_key(browser, "slot"), "slot")
    owner = sync_redis.hget(redis_keys().session(key), "owner")
    assert sync_redis.zscore(redis_keys().user_conversations(owner), "slot") is not None


def test_a_turn_that_finds_its_conversation_moved_out_under_it_brings_it_back_first(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis) -> None:
    """Moved between the turn's metadata read and its begin: the begin script answers
    `cold` instead of starting a new conversation over the old one's id."""
    from roleplay.sessions.store import Cold, SessionStore, StoredMessage, TurnSetup, now
    from roleplay.sessions.turn import begin_turn

    _turn(browser, "under", "첫 번째")
    key = session_key(browser, "under")
    owner = sync_redis.hget(redis_keys().session(key), "owner")
    _sweep()
    message = StoredMessage(id="m-2", role="user", content="두 번째", at=now())
    setup = TurnSetup(owner=owner, character_id=None, persona=None, scenario=None)

    async def begin() -> tuple[object, object]:
        store = SessionStore()
        raw = await store.begin_turn(key, [message], token="t", client_ids=[None], setup=setup,
                                     setup_changed=False, idempotency_key=None)
        begun = await begin_turn(store, key, [message], client_ids=[None], setup=setup,
                                 setup_changed=False, idempotency_key=None)
        await store.end_turn(begun)  # type: ignore[arg-type]
        return raw, begun

    raw, begun = asyncio.run(begin())
    assert isinstance(raw, Cold)
    assert begun.window.length == 3, "the two stored messages came back, then the new one"  # type: ignore[attr-defined]


def test_a_conversation_held_by_a_turn_stays_and_does_not_block_the_others(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversation_archive, "SWEEP_BATCH", 1)
    for sid in ("held", "free-1", "free-2"):
        _turn(browser, sid, "안녕")
    held = session_key(browser, "held")
    sync_redis.set(redis_keys().turn_lease(held), "a turn in progress", px=60_000)
    counts = _sweep()
    assert (counts["archived"], counts["skipped"]) == (2, 1)
    assert _hot_keys(sync_redis, held) == 3
    assert [i["state"] for i in browser.get("/api/chat/sessions").json()["data"]["items"]] == [
        "cold", "cold", "hot"]


def test_a_conversation_that_expired_in_redis_leaves_the_indexes_and_its_old_copy(
        llm: FakeLLM, browser: TestClient, sync_redis: redis.Redis) -> None:
    """Brought back once (its copy stays in the cold store), then left until Redis expired
    its keys at the retention: the sweep forgets it everywhere."""
    _turn(browser, "lapsed", "안녕")
    key = session_key(browser, "lapsed")
    _sweep()
    assert browser.get("/api/chat/sessions/lapsed").status_code == 200
    assert asyncio.run(cold_store().get(key)) is not None
    keys = redis_keys()
    sync_redis.delete(keys.session(key), keys.session_messages(key), keys.session_ids(key))
    assert _sweep()["expired"] == 1
    assert asyncio.run(cold_store().get(key)) is None
    assert sync_redis.zcard(keys.hot_conversations) == 0
    assert browser.get("/api/chat/sessions").json()["data"]["items"] == []


def test_a_sweep_stops_taking_conversations_when_its_time_is_up(
        llm: FakeLLM, browser: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for sid in ("t-1", "t-2"):
        _turn(browser, sid, "안녕")
    monkeypatch.setattr(conversation_archive, "SWEEP_BUDGET_S", 0.0)
    assert _sweep()["archived"] == 0, "the next sweep does it"
    monkeypatch.undo()
    assert _sweep()["archived"] == 2

"""A turn's lease lives as long as its turn, not longer (issue 29, finding 7).

The lease is short (`TURN_LEASE_S`, 10 s) and renewed in the background while the turn
waits on the upstream or streams its reply. So a turn cut off by a Redis restart (its
lease brought back from the append-only file) or by its process dying frees its
session within seconds, and the client's retry is served; before, the retry got 409
`turn_in_progress` for the 180 s lease's remaining life. And a generation longer than
the lease, streamed or not, on `/api` or `/v1`, still keeps its session.

Redis here is a `redis-server` of the test's own (tests/support/real_redis.py), so it can
be killed and started again; the dead process is a real local runner, SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from roleplay.chat.preparation import stored
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import RedisKeys, redis_keys
from roleplay.core.settings import get_settings
from roleplay.sessions.scope import storage_id
from roleplay.sessions.store import SessionStore, Turn, TurnSetup
from roleplay.sessions.turn import LeaseKeeper
from tests.support.fake_llm import FakeLLM
from tests.support.real_redis import RedisServer
from tests.support.server_process import server_b_process
from tests.support.sign_in import bearer
from tests.support.sse import sse_events

USER = "lease-user"
LONG_REPLY = " ".join(f"w{n}" for n in range(20))


def _say(client: TestClient, session_id: str, text: str, **extra: Any) -> Any:
    """The answer (TestClient's own httpx Response type)."""
    return client.post("/api/chat", headers=bearer(USER), json={
        "session_id": session_id, "tts_enabled": False,
        "messages": [{"role": "user", "content": text}], **extra})


def _transcript(client: TestClient, session_id: str) -> list[tuple[str, str]]:
    answer = client.get(f"/api/chat/sessions/{session_id}", headers=bearer(USER))
    assert answer.status_code == 200, answer.text
    return [(m["role"], m["content"]) for m in answer.json()["data"]["messages"]]


def _lease_left_s(url: str, prefix: str, session_id: str) -> float | None:
    client = redis.Redis.from_url(url)
    try:
        left = client.pttl(RedisKeys(prefix).turn_lease(storage_id(USER, session_id)))
    finally:
        client.close()
    return left / 1000 if left > 0 else None


def _kill(server: RedisServer) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait(10)
    server.process = None


@pytest.mark.parametrize("keeps_data", [True, False], ids=["data-kept", "data-lost"])
def test_a_turn_cut_by_a_redis_restart_is_served_on_retry_within_seconds(
        keeps_data: bool, auth_on: Callable[..., None], fake_upstream: FakeLLM, tmp_path: Path,
        key_prefix: str) -> None:
    from local_runner.app import build_app

    fake_upstream.reply, fake_upstream.token_delay_s = LONG_REPLY, 0.1
    server = RedisServer(tmp_path / "redis", append_only=keeps_data)
    server.start()
    try:
        auth_on(REDIS_URL=server.url)
        with TestClient(build_app(), raise_server_exceptions=False) as client:
            with ThreadPoolExecutor(1) as pool:
                cut = pool.submit(_say, client, "s-crash", "msg-1", stream=True)
                deadline = time.monotonic() + 10
                while not fake_upstream.chat_prompts and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)
                _kill(server)
                events = sse_events(cut.result().text)
            assert events[-1][0] == "error", "the reply could not be stored: Redis was down"

            server.start()
            left = _lease_left_s(server.url, key_prefix, "s-crash")
            if keeps_data:
                assert left is not None, "the lease came back with the data"
                assert left <= get_settings().turn_lease_s
            fake_upstream.token_delay_s = 0
            started = time.monotonic()
            retried = _say(client, "s-crash", "msg-1")
            waited = time.monotonic() - started
            assert retried.status_code == 200, retried.text
            assert waited < get_settings().turn_lease_s + 1
            assert _transcript(client, "s-crash") == [("user", "msg-1"), ("assistant", LONG_REPLY)]
    finally:
        server.stop()


def test_a_process_that_died_mid_turn_frees_its_session_within_seconds(
        auth_on: Callable[..., None], fake_upstream: FakeLLM, client: TestClient) -> None:
    """A runner SIGKILLed while it streams a reply: another instance takes the session over
    once the dead one's lease lapses, within `TURN_LEASE_S`."""
    fake_upstream.reply = " ".join(f"w{n}" for n in range(200))
    fake_upstream.token_delay_s = 0.1
    body = {"session_id": "s-dead", "tts_enabled": False, "stream": True,
            "messages": [{"role": "user", "content": "msg-1"}]}
    with (server_b_process({}) as dying,
          httpx.Client(base_url=dying.base_url, timeout=30) as http,
          http.stream("POST", "/api/chat", headers=bearer(USER), json=body) as streaming):
        assert streaming.status_code == 200
        next(line for line in streaming.iter_lines() if line.startswith("event: delta"))
        os.kill(dying.pid, signal.SIGKILL)
    died = time.monotonic()

    fake_upstream.reply, fake_upstream.token_delay_s = "taken over", 0
    retried = _say(client, "s-dead", "msg-1")
    assert retried.status_code == 200, retried.text
    assert time.monotonic() - died < get_settings().turn_lease_s + 1
    assert _transcript(client, "s-dead") == [("user", "msg-1"), ("assistant", "taken over")]


def test_a_reply_generated_longer_than_the_lease_keeps_its_session(
        auth_on: Callable[..., None], fake_upstream: FakeLLM, client: TestClient) -> None:
    """Not streamed: the lease is renewed while the turn waits on the upstream, so a turn
    sent after the lease would have lapsed is refused, not let in to drop the first reply."""
    auth_on(TURN_LEASE_S="2", TURN_WAIT_S="0")
    fake_upstream.reply, fake_upstream.reply_delay_s = "slow but whole", 3.5
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(_say, client, "s-long", "msg-1")
        time.sleep(2.8)
        refused = _say(client, "s-long", "msg-2")
        answered = long.result()
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "turn_in_progress"
    assert answered.status_code == 200 and answered.json()["data"]["message_id"]
    assert _transcript(client, "s-long") == [("user", "msg-1"), ("assistant", "slow but whole")]


def test_a_v1_stream_longer_than_the_lease_keeps_its_session(
        auth_on: Callable[..., None], fake_upstream: FakeLLM, client: TestClient) -> None:
    auth_on(TURN_LEASE_S="2", TURN_WAIT_S="0")
    fake_upstream.reply, fake_upstream.token_delay_s = LONG_REPLY, 0.2
    with ThreadPoolExecutor(1) as pool:
        streamed = pool.submit(client.post, "/v1/chat/completions", headers={
            **bearer(USER), "X-Session-Id": "s-v1"}, json={
            "model": get_settings().default_model, "stream": True,
            "messages": [{"role": "user", "content": "msg-1"}]})
        time.sleep(2.8)
        refused = _say(client, "s-v1", "msg-2")
        assert streamed.result().text.endswith("data: [DONE]\n\n")
    assert refused.status_code == 409, refused.text
    assert _transcript(client, "s-v1") == [("user", "msg-1"), ("assistant", LONG_REPLY)]


@pytest.mark.parametrize("read", [True, False], ids=["being-read", "left-unread"])
def test_a_stream_left_unread_lets_its_lease_go_and_one_being_read_keeps_it(
        read: bool, settings_env: Callable[..., None]) -> None:
    """A streamed reply whose consumer vanished without closing it must not hold its
    session for ever: its keeper stops renewing once nobody has read it for a while."""
    settings_env(TURN_LEASE_S="2")
    store = SessionStore()

    async def held_after(seconds: float) -> bool:
        begun = await store.begin_turn(
            "s-unread", [stored("user", "msg-1")], token="t-1", client_ids=[None],
            setup=TurnSetup(owner=USER, character_id=None, persona=None, scenario=None),
            setup_changed=True, idempotency_key=None)
        assert isinstance(begun, Turn)
        keeper = LeaseKeeper(store, begun).start()
        keeper.watch_idle(0.5)
        try:
            if read:
                with keeper.reading():  # a read waiting on the upstream
                    await asyncio.sleep(seconds)
            else:
                await asyncio.sleep(seconds)
            return bool(await (await get_redis()).exists(redis_keys().turn_lease("s-unread")))
        finally:
            keeper.stop()

    assert asyncio.run(held_after(3.0)) is read

"""Two Server B processes sharing one real Redis behave as one service.

Deployed, each request may land on a different Lambda instance; locally, on another
worker. Every instance keeps its own pools and memory, so sessions and the user cap
hold across instances only if Redis is the whole truth. Each test starts two local
runners (tests/support/server_process.py) on the suite's Redis under the test's key prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest
import redis

from tests.support.card_files import b64_json, png_card, v2_card
from tests.support.fake_llm import FakeLLM
from tests.support.server_process import server_b_process
from tests.support.sign_in import SECRET, bearer
from tests.support.sse import sse_events


def _instances(env: dict[str, str]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two runners started side by side (halving the wait), each behind its own client; the
    two clients are one browser (anonymous: one cookie, taken on the first before the test)."""
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(stack.enter_context, server_b_process(env)) for _ in range(2)]
        first, second = (future.result() for future in starting)
        clients = [stack.enter_context(httpx.Client(base_url=server.base_url, timeout=10))
                   for server in (first, second)]
        clients[0].get("/api/chat/sessions/first-contact")
        clients[1].cookies = clients[0].cookies
        yield clients[0], clients[1]


@pytest.fixture
def two_instances(fake_upstream: FakeLLM) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two anonymous runners; the environment (Redis, key prefix, the fake LLM) is the test's."""
    yield from _instances({})


@pytest.fixture
def two_capped_instances(fake_upstream: FakeLLM) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two runners with sign-in on and room for two users at once."""
    yield from _instances({"JWT_SECRET": SECRET, "MAX_CONCURRENT_USERS": "2"})


def test_a_conversation_alternating_between_instances_stays_whole(
        fake_upstream: FakeLLM, two_instances: tuple[httpx.Client, httpx.Client]) -> None:
    turns = 6
    for n in range(turns):
        fake_upstream.reply = f"reply {n}"
        instance = two_instances[n % 2]
        response = instance.post("/api/chat", json={
            "session_id": "s-shared", "tts_enabled": False,
            "persona": "밝은 바리스타" if n == 0 else None,
            "messages": [{"role": "user", "content": f"message {n}"}]})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["content"] == f"reply {n}"

    expected = [(role, f"{kind} {n}") for n in range(turns)
                for role, kind in (("user", "message"), ("assistant", "reply"))]
    for instance in two_instances:
        session = instance.get("/api/chat/sessions/s-shared").json()["data"]
        assert [(m["role"], m["content"]) for m in session["messages"]] == expected
        assert session["user_turns"] == turns

    prompts = fake_upstream.chat_prompts
    assert len(prompts) == turns
    last = prompts[-1]
    assert last[0]["role"] == "system" and "밝은 바리스타" in last[0]["content"], \
        "the persona set on instance A reached the prompt built on instance B"
    assert [(m["role"], m["content"]) for m in last[1:]] == expected[:-1]


def test_the_user_cap_holds_across_instances(
        fake_upstream: FakeLLM, two_capped_instances: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = two_capped_instances

    def chat(instance: httpx.Client, user: str) -> httpx.Response:
        return instance.post("/api/chat", headers=bearer(user), json={
            "session_id": f"s-{user}", "tts_enabled": False,
            "messages": [{"role": "user", "content": "안녕"}]})

    assert chat(a, "alice").status_code == 200
    assert chat(b, "bob").status_code == 200
    for instance in (a, b):
        refused = chat(instance, "carol")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "too_many_users"
        assert int(refused.headers["Retry-After"]) >= 1
    assert chat(b, "alice").status_code == 200, "alice's place, taken on A, is hers on B"

    released = a.post("/api/chat/release", headers=bearer("bob"))
    assert released.json() == {"success": True, "data": {"released": True}}
    assert chat(b, "carol").status_code == 200, "bob's release on A freed his place on B"
    assert chat(a, "bob").status_code == 503, "and carol now holds it"


def test_every_kind_of_request_holds_across_instances(
        fake_upstream: FakeLLM, two_instances: tuple[httpx.Client, httpx.Client],
        sync_redis: redis.Redis, key_prefix: str) -> None:
    """Issue 26's list, each step on the other instance than the last: card import, a turn,
    a streamed turn, regenerate, delete. With `--redis cluster`, on a three-node cluster."""
    a, b = two_instances
    card = png_card(("chara", b64_json(v2_card(first_mes="", alternate_greetings=[]))))
    imported = a.post("/api/characters/import", content=card, headers={"content-type": "image/png"})
    assert imported.status_code == 201, imported.text
    character_id = imported.json()["data"]["id"]
    assert character_id in [c["id"] for c in b.get("/api/characters").json()["data"]["items"]]

    fake_upstream.reply = "첫 답"
    turn = b.post("/api/chat", json={
        "session_id": "s-every", "character_id": character_id, "tts_enabled": False,
        "messages": [{"role": "user", "content": "안녕"}]})
    assert turn.status_code == 200, turn.text

    fake_upstream.reply = "스트림 답"
    streamed = sse_events(a.post("/api/chat", json={
        "session_id": "s-every", "stream": True, "tts_enabled": False,
        "messages": [{"role": "user", "content": "또 안녕"}]}).text)
    assert streamed[-1][0] == "done" and streamed[-1][1]["content"] == "스트림 답"

    fake_upstream.reply = "다시 쓴 답"
    regenerated = b.post("/api/chat/sessions/s-every/regenerate", json={"tts_enabled": False})
    assert regenerated.status_code == 200, regenerated.text
    session = a.get("/api/chat/sessions/s-every").json()["data"]
    assert [m["content"] for m in session["messages"]] == ["안녕", "첫 답", "또 안녕", "다시 쓴 답"]

    session_keys = [key for key in sync_redis.scan_iter(f"{key_prefix}session:*")]
    assert any(key.endswith(":lorebook") for key in session_keys), "the card's book fired"
    assert b.delete("/api/chat/sessions/s-every").status_code == 200
    gone = a.get("/api/chat/sessions/s-every")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "session_not_found"
    assert not list(sync_redis.scan_iter(f"{key_prefix}session:*")), "no key of it is left"

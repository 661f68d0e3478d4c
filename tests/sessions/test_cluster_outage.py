"""A Redis Cluster shard that stops mid-run (runs with `--redis cluster`, skipped otherwise).

While the shard is down, every request it is needed for answers a clean 503 with a code
that says so, and health says `down`; once it is back, every session is whole (every
reply acknowledged before or during the outage is there) and takes turns again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from roleplay.core.redis_keys import RedisKeys
from roleplay.sessions.scope import storage_id
from tests.support.fake_llm import FakeLLM
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.sign_in import bearer

STOPPED = 1
OUTAGE_CODES = {"redis_unavailable", "redis_shard_unavailable"}


def _turn(client: TestClient, n: int, text: str) -> httpx.Response:
    return client.post("/api/chat", headers=bearer(f"user-{n}"), json={
        "session_id": f"s-{n}", "tts_enabled": False,
        "messages": [{"role": "user", "content": text}]})


def _transcript(client: TestClient, n: int) -> list[str]:
    answer = client.get(f"/api/chat/sessions/s-{n}", headers=bearer(f"user-{n}"))
    assert answer.status_code == 200, answer.text
    return [m["content"] for m in answer.json()["data"]["messages"]]


def test_a_stopped_shard_answers_clean_503s_and_loses_nothing_acknowledged(
        redis_cluster: RedisClusterNodes, fake_upstream: FakeLLM, client: TestClient,
        admin_health: Callable[[], dict[str, object]], key_prefix: str,
        settings_env: Callable[..., None]) -> None:
    settings_env(TURN_WAIT_S="0")
    keys = RedisKeys(key_prefix)
    sessions = range(12)
    stopped_port = redis_cluster.ports[STOPPED]
    with redis_cluster.client(0) as node:
        owner_of = {n: _port_of_slot(node, keys.session(storage_id(f"user-{n}", f"s-{n}")))
                    for n in sessions}
    on_stopped = [n for n in sessions if owner_of[n] == stopped_port]
    assert 0 < len(on_stopped) < len(sessions), "the sessions spread over the shards"

    acknowledged: dict[int, list[str]] = {}
    for n in sessions:
        fake_upstream.reply = f"before {n}"
        assert _turn(client, n, f"hello {n}").status_code == 200
        acknowledged[n] = [f"hello {n}", f"before {n}"]
    assert admin_health()["data"]["checks"]["redis"]["status"] == "ok"  # type: ignore[index]

    redis_cluster.stop_node(STOPPED)
    try:
        for n in sessions:
            fake_upstream.reply = f"during {n}"
            answer = _turn(client, n, f"during {n}")
            if answer.status_code == 200:
                assert n not in on_stopped
                acknowledged[n] += [f"during {n}", f"during {n}"]
                continue
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] in OUTAGE_CODES
            assert answer.headers["Retry-After"]
        for n in on_stopped:
            refused = _turn(client, n, "again")
            assert refused.status_code == 503 and refused.json()["error"]["code"] in OUTAGE_CODES
        health = admin_health()
        assert health["success"] is False
        assert health["error"]["details"]["checks"]["redis"]["status"] in (  # type: ignore[index]
            "down", "unreachable")
    finally:
        redis_cluster.start_node(STOPPED)

    deadline = time.monotonic() + 15
    while admin_health().get("success") is not True and time.monotonic() < deadline:
        time.sleep(0.2)
    assert admin_health()["data"]["checks"]["redis"]["status"] == "ok"  # type: ignore[index]
    for n in sessions:
        assert _transcript(client, n)[:len(acknowledged[n])] == acknowledged[n]
        fake_upstream.reply = f"after {n}"
        answer = _turn(client, n, f"after {n}")
        assert answer.status_code == 200, answer.text
        assert _transcript(client, n)[-2:] == [f"after {n}", f"after {n}"]


def _port_of_slot(node: object, key: str) -> int:
    """The port of the node serving `key`'s slot, from `CLUSTER SLOTS` as one node sees it."""
    import redis
    from redis.crc import key_slot

    assert isinstance(node, redis.Redis)
    slot = key_slot(key.encode())
    for first, last, primary, *_ in node.execute_command("CLUSTER SLOTS"):  # type: ignore[no-untyped-call]
        if first <= slot <= last:
            return int(primary[1])
    pytest.fail(f"slot {slot} is not served")

"""An upgrade keeps what a single-Redis deployment stored under the old key names
(roleplay.core.key_migration): the version before hash tags writes, this one reads."""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from roleplay.core.key_migration import migrate, tagged_name
from roleplay.core.redis_keys import KEYS_VERSION, RedisKeys
from tests.support.fake_llm import FakeLLM
from tests.support.real_redis import RedisServer
from tests.support.server_process import ROOT, server_b_process
from tests.support.sign_in import SECRET, bearer

BEFORE_TAGS = "d4f825f"
"""The last commit of main whose keys had no hash tags."""

KEYS = RedisKeys("rp:")


def _checkout(commit: str, into: Path) -> Path:
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                                 capture_output=True).stdout
    except subprocess.CalledProcessError as error:  # a shallow clone lacks the old commit
        pytest.skip(f"commit {commit} is not in this clone: {error.stderr.decode()[:200]}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


@pytest.mark.parametrize(("old", "new"), [
    ("rp:session:s0a1b", "rp:session:{s0a1b}"),
    ("rp:session:s0a1b:messages", "rp:session:{s0a1b}:messages"),
    ("rp:session:s0a1b:summary-lock", "rp:session:{s0a1b}:summary-lock"),
    ("rp:user:anon:c-1:persona", "rp:user:{u:anon:c-1}:persona"),
    ("rp:quota:u1:tokens:20000", "rp:quota:{u:u1}:tokens:20000"),
    ("rp:tts-busy:u1", "rp:tts-busy:{u:u1}"),
    ("rp:gpu:state", "rp:{gpu}:state"),
    ("rp:gpu:leases:chat", "rp:{gpu}:leases:chat"),
])
def test_old_names_map_to_their_tagged_names(old: str, new: str) -> None:
    assert tagged_name(KEYS, old) == new


@pytest.mark.parametrize("kept", ["rp:character:c1", "rp:character:c1:image", "rp:characters",
                                  "rp:token-ratios", "rp:anon-cookie-key", "rp:active-users",
                                  "rp:session:{s0a1b}", "other:session:s0a1b"])
def test_keys_that_keep_their_names_are_left_alone(kept: str) -> None:
    assert tagged_name(KEYS, kept) is None


def test_migration_keeps_values_and_ttls_and_runs_once(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as url:
        sync = redis.Redis.from_url(url, decode_responses=True)
        sync.rpush("rp:session:s0a1b:messages", "m1", "m2")
        sync.expire("rp:session:s0a1b:messages", 3000)
        sync.set("rp:user:u1:persona", '{"name":"철수"}')

        async def run() -> int:
            client = redis.asyncio.Redis.from_url(url, decode_responses=True)
            try:
                return await migrate(client, KEYS)
            finally:
                await client.aclose()

        assert asyncio.run(run()) == 2
        assert sync.lrange("rp:session:{s0a1b}:messages", 0, -1) == ["m1", "m2"]
        assert 2990 < sync.ttl("rp:session:{s0a1b}:messages") <= 3000
        assert sync.get("rp:user:{u:u1}:persona") == '{"name":"철수"}'
        assert sync.get(KEYS.keys_version) == KEYS_VERSION
        assert asyncio.run(run()) == 0
        sync.close()


def test_a_deployment_upgraded_in_place_keeps_characters_personas_and_conversations(
        tmp_path: Path, fake_upstream: FakeLLM, settings_env: Callable[..., None]) -> None:
    old_tree = _checkout(BEFORE_TAGS, tmp_path / "old")
    user = bearer("upgrader")
    with RedisServer(tmp_path / "redis") as url:
        env = {"REDIS_URL": url, "REDIS_KEY_PREFIX": "rp:", "JWT_SECRET": SECRET}
        with server_b_process(env, root=old_tree) as old, httpx.Client(
                base_url=old.base_url, timeout=10) as http:
            created = http.post("/api/characters", headers=user, json={
                "name": "민지", "persona": "밝은 바리스타"})
            assert created.status_code == 201, created.text
            character = created.json()["data"]
            assert http.put("/api/users/me/persona", headers=user,
                            json={"name": "철수"}).status_code == 200
            fake_upstream.reply = "어서 오세요!"
            assert http.post("/api/chat", headers=user, json={
                "session_id": "before-upgrade", "character_id": character["id"],
                "tts_enabled": False, "messages": [{"role": "user", "content": "안녕"}],
            }).status_code == 200
        sync = redis.Redis.from_url(url, decode_responses=True)
        assert not [key for key in sync.keys("rp:*") if "{" in key], "the old version tagged keys"

        with server_b_process(env) as new, httpx.Client(base_url=new.base_url, timeout=10) as http:
            listed = http.get("/api/characters", headers=user).json()["data"]["items"]
            assert [c["id"] for c in listed] == [character["id"]]
            assert http.get("/api/users/me/persona", headers=user).json()["data"]["name"] == "철수"
            session = http.get("/api/chat/sessions/before-upgrade", headers=user).json()["data"]
            assert [m["content"] for m in session["messages"]] == ["안녕", "어서 오세요!"]
            fake_upstream.reply = "또 오셨네요."
            again = http.post("/api/chat", headers=user, json={
                "session_id": "before-upgrade", "tts_enabled": False,
                "messages": [{"role": "user", "content": "다시 왔어"}]})
            assert again.status_code == 200, again.text
        assert "철수" in fake_upstream.chat_prompts[-1][0]["content"]
        assert [m["content"] for m in fake_upstream.chat_prompts[-1][1:]] == [
            "안녕", "어서 오세요!", "다시 왔어"]
        assert sync.get(KEYS.keys_version) == KEYS_VERSION
        assert not [key for key in sync.keys("rp:session:*") if "{" not in key]
        sync.close()

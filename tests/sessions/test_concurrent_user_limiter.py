"""The concurrent-user cap, against a real Redis, including a race of OS processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from fastapi import APIRouter
from fastapi.testclient import TestClient
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from local_runner.embedded_redis import EmbeddedRedis
from roleplay.core.identity import User
from roleplay.core.redis_client import get_redis
from roleplay.core.redis_keys import redis_keys
from roleplay.sessions.concurrent_user_limiter import (
    _ADMIT_SCRIPT,
    Admission,
    ConcurrentUserLimiter,
    TooManyUsers,
    occupant_id,
    too_many_users_message,
)
from roleplay.web.function_app import create_function_app

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def admit_all(limiter: ConcurrentUserLimiter, user_ids: list[str]) -> list[Admission]:
    async def go() -> list[Admission]:
        return [await limiter.admit(user_id) for user_id in user_ids]

    return run(go())


def server_ms(sync_redis: redis.Redis) -> int:
    seconds, micros = sync_redis.time()
    return seconds * 1000 + micros // 1000


def users(count: int, tag: str = "u") -> list[str]:
    return [f"{tag}-{n}" for n in range(count)]


# --- the cap ---------------------------------------------------------------------------


def test_limiter_admits_up_to_the_cap_then_refuses(
    settings_env: Callable[..., None], sync_redis: redis.Redis
) -> None:
    settings_env(MAX_CONCURRENT_USERS="20")
    limiter = ConcurrentUserLimiter()
    admissions = admit_all(limiter, [*users(20), "late"])
    assert [a.admitted for a in admissions] == [True] * 20 + [False]
    assert [a.active for a in admissions[:20]] == list(range(1, 21))
    refused = admissions[-1]
    assert refused.active == 20
    assert 3590 <= refused.retry_after_s <= 3600  # the oldest entry expires an hour after it came
    assert run(limiter.active_count()) == 20
    key = redis_keys().active_users
    assert sync_redis.zcard(key) == 20 and sync_redis.zscore(key, "late") is None
    assert 0 < sync_redis.pttl(key) <= 3600 * 1000


def test_limiter_admits_existing_user_when_full(
    settings_env: Callable[..., None], sync_redis: redis.Redis
) -> None:
    settings_env(MAX_CONCURRENT_USERS="3")
    limiter = ConcurrentUserLimiter()
    admit_all(limiter, users(3))
    key = redis_keys().active_users
    before = sync_redis.zscore(key, "u-0")
    time.sleep(0.01)
    again, stranger = admit_all(limiter, ["u-0", "stranger"])
    assert again == Admission(admitted=True, active=3, retry_after_s=0)
    assert not stranger.admitted
    after = sync_redis.zscore(key, "u-0")
    assert before is not None and after is not None and after > before  # last seen refreshed


def test_retry_after_is_when_the_oldest_entry_expires(sync_redis: redis.Redis) -> None:
    limiter = ConcurrentUserLimiter(max_users=2, ttl_s=60)
    admit_all(limiter, ["old", "new"])
    key = redis_keys().active_users
    sync_redis.zadd(key, {"old": server_ms(sync_redis) - 60_000 + 2_500})  # expires in 2.5 s
    refused = admit_all(limiter, ["third"])[0]
    assert not refused.admitted
    assert refused.retry_after_s == 3  # rounded up, never 0

    sync_redis.zadd(key, {"old": server_ms(sync_redis) - 60_000 + 500})  # 0.5 s (50 ms lapsed when loaded)
    assert admit_all(limiter, ["third"])[0].retry_after_s == 1  # rounded up, never 0


def test_refused_is_503_with_retry_after_in_the_envelope(settings_env: Callable[..., None]) -> None:
    settings_env(MAX_CONCURRENT_USERS="2")
    limiter = ConcurrentUserLimiter()
    router = APIRouter()

    @router.post("/enter/{user_id}")
    async def enter(user_id: str) -> dict[str, int]:
        admission = await limiter.ensure_admitted(user_id)
        return {"active": admission.active}

    with TestClient(create_function_app("limiter-test", [router])) as client:
        assert client.post("/enter/a").json() == {"active": 1}
        assert client.post("/enter/b").json() == {"active": 2}
        response = client.post("/enter/c", headers={"X-Request-ID": "r-c"})
        assert response.status_code == 503
        retry_after = int(response.headers["Retry-After"])
        assert 3590 <= retry_after <= 3600
        message = "최대 동시 접속자 수(2명)에 도달했습니다. 잠시 후 다시 시도해주세요."
        assert response.json() == {
            "success": False,
            "error": {"code": "too_many_users", "message": message,
                      "details": {"max_concurrent_users": 2, "retry_after_s": retry_after},
                      "request_id": "r-c"},
        }
        assert client.post("/enter/a").status_code == 200  # already in: still served


def test_too_many_users_carries_the_design_documents_message() -> None:
    error = TooManyUsers(20, 7)
    assert (error.status_code, error.error_code) == (503, "too_many_users")
    assert error.message == "최대 동시 접속자 수(20명)에 도달했습니다. 잠시 후 다시 시도해주세요."
    assert error.message == too_many_users_message(20)
    assert error.headers == {"Retry-After": "7"}


# --- expiry and release ----------------------------------------------------------------


def test_expiry_frees_slots_and_the_key(sync_redis: redis.Redis) -> None:
    limiter = ConcurrentUserLimiter(max_users=2, ttl_s=1.0)
    admit_all(limiter, ["a", "b"])
    refused = admit_all(limiter, ["c"])[0]
    assert not refused.admitted and refused.retry_after_s == 1
    time.sleep(1.2)
    assert run(limiter.active_count()) == 0
    assert sync_redis.exists(redis_keys().active_users) == 0  # an idle deployment leaves nothing
    assert admit_all(limiter, ["c"])[0] == Admission(admitted=True, active=1, retry_after_s=0)


def test_each_request_refreshes_activity(sync_redis: redis.Redis) -> None:
    limiter = ConcurrentUserLimiter(max_users=2, ttl_s=60)
    admit_all(limiter, ["kept", "idle"])
    key = redis_keys().active_users
    nearly_expired = server_ms(sync_redis) - 60_000 + 300
    sync_redis.zadd(key, {"kept": nearly_expired, "idle": nearly_expired})
    admit_all(limiter, ["kept"])  # a request from "kept" just in time
    time.sleep(0.5)
    assert run(limiter.active_count()) == 1
    assert sync_redis.zscore(key, "idle") is None and sync_redis.zscore(key, "kept") is not None
    assert admit_all(limiter, ["newcomer"])[0].admitted


def test_an_entry_exactly_ttl_old_has_expired(sync_redis: redis.Redis) -> None:
    limiter = ConcurrentUserLimiter(max_users=1, ttl_s=60)
    admit_all(limiter, ["old"])
    sync_redis.zadd(redis_keys().active_users, {"old": server_ms(sync_redis) - 60_000})
    assert admit_all(limiter, ["new"])[0].admitted


def test_release_frees_a_slot_at_once(settings_env: Callable[..., None]) -> None:
    settings_env(MAX_CONCURRENT_USERS="2")
    limiter = ConcurrentUserLimiter()

    async def go() -> None:
        await limiter.admit("a")
        await limiter.admit("b")
        assert not (await limiter.admit("c")).admitted
        assert await limiter.release("a") is True
        assert await limiter.release("a") is False  # nothing left to release
        assert await limiter.release("never-seen") is False
        assert (await limiter.admit("c")).admitted
        assert await limiter.active_count() == 2

    run(go())


def test_a_slot_is_the_users_never_a_sessions() -> None:
    anonymous_client = User(id="anon:c:abc", authenticated=False)
    assert {occupant_id(anonymous_client, s) for s in ("s1", "s2", "s3")} == {"anon:c:abc"}
    signed_in = User(id="alice", authenticated=True)
    assert occupant_id(signed_in, "s1") == occupant_id(signed_in, "s2") == "alice"


def test_a_user_takes_over_its_fallbacks_slot_instead_of_a_new_one(sync_redis: redis.Redis) -> None:
    """An anonymous browser's first request was filed under its address; once it holds its
    cookie it moves into that slot, even when the cap is full, and cannot multiply it."""
    limiter = ConcurrentUserLimiter(max_users=2)
    browser = User(id="anon:c:one", authenticated=False, fallback_owner="anon:a:home")
    second_cookie = User(id="anon:c:two", authenticated=False, fallback_owner="anon:a:home")

    async def go() -> list[bool]:
        assert (await limiter.admit("anon:a:home")).admitted
        assert (await limiter.admit("someone-else")).admitted
        return [(await limiter.admit(browser)).admitted, (await limiter.admit(second_cookie)).admitted]

    assert run(go()) == [True, False]
    assert set(sync_redis.zrange(redis_keys().active_users, 0, -1)) == {"anon:c:one", "someone-else"}


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ConcurrentUserLimiter(max_users=0)
    with pytest.raises(ValueError):
        ConcurrentUserLimiter(ttl_s=0)


# --- one round trip --------------------------------------------------------------------


def test_one_round_trip_per_admission_on_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts what the client writes to and reads from its socket."""
    limiter = ConcurrentUserLimiter(max_users=5)
    sent: list[bytes] = []
    reads = 0
    send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

    async def counting_send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, bytes | str) else list(command)
        payload = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        sent.append(payload)
        await send(self, payload, check_health)

    async def counting_read(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read(self, *args, **kwargs)

    async def go() -> list[Admission]:
        await limiter.admit("warm-up")  # connects, and loads the script if Redis lacks it
        sent.clear()
        nonlocal reads
        reads = 0
        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
        monkeypatch.setattr(AbstractConnection, "read_response", counting_read)
        try:
            return [await limiter.admit(user_id) for user_id in users(8)]
        finally:
            monkeypatch.undo()

    admissions = run(go())
    assert [a.admitted for a in admissions] == [True] * 4 + [False] * 4
    assert len(sent) == 8 and reads == 8
    assert all(b"EVALSHA" in payload and b"ZREMRANGEBYSCORE" not in payload for payload in sent)


def test_a_redis_that_forgot_the_script_still_admits(
    settings_env: Callable[..., None], tmp_path: Path
) -> None:
    """After a restart or failover Redis has no script cache; EVALSHA's NOSCRIPT reloads it.
    A private Redis, so flushing its scripts disturbs no one else."""
    with EmbeddedRedis(tmp_path) as private_url:
        settings_env(REDIS_URL=private_url)
        limiter = ConcurrentUserLimiter(max_users=1)

        async def go() -> tuple[Admission, Admission, list[bool]]:
            client = await get_redis()
            first = await limiter.admit("a")
            await client.script_flush()
            second = await limiter.admit("b")
            return first, second, await client.script_exists(_ADMIT_SCRIPT.sha)

        first, second, loaded = run(go())
    assert first.admitted and not second.admitted and second.retry_after_s >= 1
    assert loaded == [True]  # loaded again


def _our_command(command: dict[str, Any], address: str) -> bool:
    if command["client_type"] == "lua":
        return False
    if command["client_type"] == "unix":  # the embedded Redis: private to this test run
        return True
    return f"{command['client_address']}:{command['client_port']}" == address


def test_the_server_sees_one_command_per_admission(redis_url: str, key_prefix: str) -> None:
    """Redis's own MONITOR: from the limiter's connection, one EVALSHA per admission;
    the sorted-set work happens inside the script."""
    limiter = ConcurrentUserLimiter(max_users=5)
    sentinel = f"done-{uuid.uuid4().hex}"

    async def go() -> tuple[list[str], list[str]]:
        client = await get_redis()
        await limiter.admit("warm-up")
        node_url, on_node = redis_url, dict[str, Any]()
        if isinstance(client, RedisCluster):  # watch the shard owning the cap's key
            node = client.get_node_from_key(redis_keys().active_users)
            node_url, on_node = f"redis://{node.host}:{node.port}/0", {"target_nodes": node}
        address = str((await client.client_info(**on_node))["addr"])
        watcher = Redis.from_url(node_url, decode_responses=True)
        ours: list[str] = []
        inside: list[str] = []
        try:
            async with watcher.monitor() as monitor:

                async def collect() -> None:
                    while True:
                        command = await monitor.next_command()
                        if command["client_type"] == "lua" and key_prefix in command["command"]:
                            inside.append(command["command"])
                        elif _our_command(command, address):
                            if command["command"] == f"ECHO {sentinel}":
                                return
                            ours.append(command["command"])

                collector = asyncio.create_task(collect())
                for user_id in users(6):
                    await limiter.admit(user_id)
                await client.echo(sentinel, **on_node)
                await asyncio.wait_for(collector, timeout=10)
        finally:
            await watcher.aclose()
        return ours, inside

    ours, inside = run(go())
    assert len(ours) == 6, ours
    assert all(command.startswith("EVALSHA ") and redis_keys().active_users in command for command in ours)
    assert any(command.startswith("ZREMRANGEBYSCORE") for command in inside)
    assert any(command.startswith("ZADD") for command in inside)


# --- Redis down ------------------------------------------------------------------------


def test_unreachable_redis_raises_and_admits_nobody(settings_env: Callable[..., None]) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    limiter = ConcurrentUserLimiter(max_users=20)
    with pytest.raises(RedisConnectionError):
        run(limiter.admit("someone"))
    with pytest.raises(RedisConnectionError):
        run(limiter.ensure_admitted("someone"))


def test_unreachable_redis_is_a_503_not_an_admission(settings_env: Callable[..., None]) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    limiter = ConcurrentUserLimiter(max_users=20)
    router = APIRouter()
    reached: list[str] = []

    @router.post("/enter/{user_id}")
    async def enter(user_id: str) -> dict[str, bool]:
        await limiter.ensure_admitted(user_id)
        reached.append(user_id)
        return {"ok": True}

    with TestClient(create_function_app("limiter-test", [router]), raise_server_exceptions=False) as client:
        response = client.post("/enter/a")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "redis_unavailable"
    assert reached == []


# --- the race --------------------------------------------------------------------------

PROCESSES = 8
USERS_PER_PROCESS = 25
CAP = 20


def _race_worker(
    env: dict[str, str], worker: int, ready: Any, go_signal: Any, start_at: Any, results: Any
) -> None:
    """One OS process: connects, reports ready, and at the shared start time fires all its
    users at once, each on its own connection."""
    os.environ.update(env)
    limiter = ConcurrentUserLimiter()

    async def race() -> tuple[float, float, list[tuple[str, bool, int, int]]]:
        client = await get_redis()
        await asyncio.gather(*(client.ping() for _ in range(USERS_PER_PROCESS)))  # a connection each
        ids = [f"w{worker}-u{n}" for n in range(USERS_PER_PROCESS)]
        ready.put(worker)
        await asyncio.to_thread(go_signal.wait, 60)
        await asyncio.sleep(max(0.0, start_at.value - time.time()))  # one shared start time
        started = time.time()
        admissions = await asyncio.gather(*(limiter.admit(user_id) for user_id in ids))
        finished = time.time()
        return started, finished, [(user_id, a.admitted, a.active, a.retry_after_s)
                                   for user_id, a in zip(ids, admissions, strict=True)]

    try:
        results.put((worker, *asyncio.run(race())))
    except BaseException as error:
        results.put((worker, repr(error)))
        ready.put(worker)  # never leave the parent waiting
        raise


def test_race_of_processes_admits_exactly_the_cap(
    redis_url: str, key_prefix: str, sync_redis: redis.Redis
) -> None:
    context = multiprocessing.get_context("spawn")
    ready, results, go_signal = context.Queue(), context.Queue(), context.Event()
    start_at = context.Value("d", 0.0)
    env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": key_prefix,
           "MAX_CONCURRENT_USERS": str(CAP), "SESSION_TTL_S": "3600"}
    workers = [context.Process(target=_race_worker, args=(env, n, ready, go_signal, start_at, results))
               for n in range(PROCESSES)]
    for process in workers:
        process.start()
    try:
        for _ in workers:
            ready.get(timeout=120)  # every process connected and waiting
        start_at.value = time.time() + 0.25
        go_signal.set()
        answers = [results.get(timeout=120) for _ in workers]
    finally:
        go_signal.set()
        for process in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    failures = [answer for answer in answers if len(answer) == 2]
    assert not failures, failures

    outcomes = [outcome for _, _, _, batch in answers for outcome in batch]
    assert len(outcomes) == PROCESSES * USERS_PER_PROCESS == 200
    admitted = {user for user, ok, _, _ in outcomes if ok}
    refused = [(active, retry) for _, ok, active, retry in outcomes if not ok]
    assert len(admitted) == CAP
    assert len(refused) == 200 - CAP
    assert all(retry >= 1 for _, retry in refused)
    assert all(active == CAP for active, _ in refused)
    assert sorted(active for _, ok, active, _ in outcomes if ok) == list(range(1, CAP + 1))
    assert set(sync_redis.zrange(redis_keys().active_users, 0, -1)) == admitted
    # the processes really overlapped: each one's requests were in flight while another's were
    windows = [(started, finished) for _, started, finished, _ in answers]
    assert all(any(other is not mine and other[0] < mine[1] and mine[0] < other[1] for other in windows)
               for mine in windows), windows
    assert all(process.exitcode == 0 for process in workers)


def test_limiter_admits_a_user_it_admitted_moments_ago_without_asking_redis_until_released(
        sync_redis: redis.Redis) -> None:
    limiter = ConcurrentUserLimiter(max_users=5, ttl_s=3600)
    key = redis_keys().active_users

    async def turns() -> list[bool]:
        await limiter.ensure_admitted("regular")
        sync_redis.zrem(key, "regular")  # another instance released it meanwhile
        shortcut = await limiter.ensure_admitted("regular")
        unseen = sync_redis.zscore(key, "regular") is None
        await limiter.release("regular")  # a release here ends the shortcut at once
        await limiter.ensure_admitted("regular")
        return [shortcut.admitted and not shortcut.new, unseen,
                sync_redis.zscore(key, "regular") is not None]

    assert run(turns()) == [True, True, True]


def test_limiter_shortcut_lasts_a_tenth_of_a_short_ttl(sync_redis: redis.Redis) -> None:
    limiter = ConcurrentUserLimiter(max_users=1, ttl_s=1)

    async def turns() -> None:
        await limiter.ensure_admitted("first")
        await asyncio.sleep(1.1)  # its slot expired, and the shortcut long before
        await limiter.ensure_admitted("second")
        with pytest.raises(TooManyUsers):
            await limiter.ensure_admitted("first")

    run(turns())

"""How long an admission decision takes, and how many Redis round trips a chat turn costs.

Both run in this process against the bench's own Redis: admissions through the limiter
itself, chat turns through the whole app (httpx's ASGI transport) with a scripted
upstream. A round trip is one `send_packed_command` of redis-py's connection: a
pipeline or a script counts once, as it crosses the network once. Redis's own count,
`INFO commandstats`, is read around the same turns: it also counts the commands a
script runs inside Redis, which cost no round trip.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from contextlib import contextmanager
from typing import Any

import httpx
import redis
from redis.asyncio.connection import AbstractConnection

from bench.harness import bench_env, save, summary_ms
from tests.support.fake_llm import FakeLLM
from tests.support.upstream_server import serve

ADMISSIONS = 3000
TURNS = 20


class RoundTrips:
    """Counts what redis-py sends, per network write."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def counting(self) -> Any:
        original = AbstractConnection.send_packed_command
        counter = self

        async def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            counter.count += 1
            await original(self, *args, **kwargs)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def _admissions(n: int) -> dict[str, Any]:
    from roleplay.sessions.concurrent_user_limiter import ConcurrentUserLimiter

    limiter = ConcurrentUserLimiter(max_users=20)
    await limiter.admit("warm-up")
    sequential: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        await limiter.admit(f"user-{i % 40}")
        sequential.append(time.perf_counter() - started)

    concurrent: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        await limiter.admit(f"user-{i % 40}")
        concurrent.append(time.perf_counter() - started)

    for batch in range(n // 16):
        await asyncio.gather(*(one(batch * 16 + k) for k in range(16)))
    trips = RoundTrips()
    with trips.counting():
        for i in range(100):
            await limiter.admit(f"user-{i}")
    for i in range(100):
        await limiter.release(f"user-{i}")
    return {"sequential": summary_ms(sequential), "16_at_once": summary_ms(concurrent),
            "round_trips_per_admission": trips.count / 100}


def _commandstats(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}


async def _turns(api: Callable[[], httpx.AsyncClient], redis_url: str) -> dict[str, Any]:
    trips = RoundTrips()
    per_turn: list[int] = []
    async with api() as http:
        character = (await http.post("/api/characters", json={
            "name": "민지", "persona": "밝은 바리스타"})).json()["data"]
        body: dict[str, Any] = {"character_id": character["id"], "max_tokens": 128, "tts_enabled": False,
                                "messages": [{"role": "user", "content": "안녕!"}]}
        opened = await http.post("/api/chat", json=body)
        assert opened.status_code == 200, opened.text
        first = opened.json()["data"]
        body = {"session_id": first["session_id"], "max_tokens": 128, "tts_enabled": False}
        stats_before = _commandstats(redis_url)
        for n in range(TURNS):
            with trips.counting():
                before = trips.count
                response = await http.post("/api/chat", json={
                    **body, "messages": [{"role": "user", "content": f"{n}번째 질문이야."}]})
                per_turn.append(trips.count - before)
            assert response.status_code == 200, response.text
        stats_after = _commandstats(redis_url)
    calls = {name: stats_after[name] - stats_before.get(name, 0) for name in sorted(stats_after)}
    executed = {name: round(n / TURNS, 2) for name, n in calls.items() if n > 0 and name != "info"}
    return {"per_turn": sorted(set(per_turn)), "median": sorted(per_turn)[len(per_turn) // 2],
            "redis_commandstats_per_turn": executed,
            "redis_commands_executed_per_turn": round(sum(executed.values()), 2)}


def _run(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    return asyncio.run(coroutine)


def run(admissions: int = ADMISSIONS) -> dict[str, Any]:
    from local_runner.app import build_app
    from roleplay.core.settings import get_settings

    llm = FakeLLM()
    with bench_env("limiter") as (redis_url, prefix), serve(llm.app()) as upstream:
        os.environ.update({"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
                           "LLM_BASE_URL": upstream, "LLM_SERVICE": "vllm"})
        get_settings.cache_clear()
        admission = _run(_admissions(admissions))
        app = build_app()

        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")

        turns = _run(_turns(client, redis_url))
    result = {"setup": {"admissions": admissions, "cap": 20, "distinct_users": 40},
              "admission_latency": admission, "redis_round_trips_per_chat_turn": turns}
    save("limiter", result)
    return result


if __name__ == "__main__":
    run()

"""What Server B adds to a chat turn: a turn through Server B against the same request
sent straight to the upstream, at 1, 20 and 100 concurrent users.

The upstream is the instant stub (bench/stub_llm.py) in its own process, so the
difference is Server B's own work: auth, admission, the session in Redis, the prompt,
the relay, and storing the reply. Each user chats in a session of their own; the
first turn of each session is a warm-up. Two kinds of load:

- chatting: each user (a client and connection of their own) reads the reply and
  sends the next message after a pause of 0.5-1.5 s (a fast typist takes several
  seconds), so users overlap as they do in use;
- back to back: each user sends the next message the moment the reply arrives, which
  measures throughput: latency there is mostly waiting in line for the CPU.

Server B is one uvicorn process, as `make run` starts it; its CPU time per turn is
read from the kernel.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from bench.harness import bench_env, cpu_ms, save, stub_upstream, summary_ms
from tests.support.server_process import server_b_process

LEVELS = (1, 20, 100)
TURNS_PER_LEVEL = 600
CHATTING_TURNS = {1: 300, 20: 20, 100: 8}
THINK_S = (0.5, 1.5)
PERSONA = "밝고 다정한 바리스타 민지. 손님의 이야기를 잘 들어 주고, 비 오는 날을 좋아한다."
LINE = "오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"
REPLY = "응, 나도 비 오는 날이 좋아. 따뜻한 차 한 잔 어때?"


def _direct_body(turn: int) -> dict[str, Any]:
    """About what Server B sends upstream for the same turn: persona, history, the line."""
    history: list[dict[str, str]] = []
    for n in range(min(turn, 8)):
        history += [{"role": "user", "content": f"{n}. {LINE}"}, {"role": "assistant", "content": REPLY}]
    return {"model": "stub", "max_tokens": 128, "temperature": 0.7,
            "messages": [{"role": "system", "content": PERSONA * 6}, *history,
                         {"role": "user", "content": f"{turn}. {LINE}"}]}


async def _users(base_url: str, users: int, turns: int, one_turn: Any, think: bool) -> list[float]:
    """Each user on a client (a connection) of their own, as each person has a browser."""
    samples: list[float] = []
    pauses = random.Random(users)

    async def user(u: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            await one_turn(http, u, 0)
            for t in range(1, turns + 1):
                if think and users > 1:
                    await asyncio.sleep(pauses.uniform(*THINK_S))
                started = time.perf_counter()
                await one_turn(http, u, t)
                samples.append(time.perf_counter() - started)

    await asyncio.gather(*(user(u) for u in range(users)))
    return samples


async def _level(api: str, upstream: str, server_pid: int, users: int, tag: str,
                 think: bool) -> dict[str, Any]:
    turns = CHATTING_TURNS[users] if think else max(5, TURNS_PER_LEVEL // users)

    async def through_b(http: httpx.AsyncClient, u: int, t: int) -> None:
        response = await http.post("/api/chat", json={
            "session_id": f"{tag}-{users}-{u}", "persona": PERSONA, "max_tokens": 128,
            "tts_enabled": False, "messages": [{"role": "user", "content": f"{t}. {LINE}"}]})
        if response.status_code != 200:
            raise RuntimeError(f"Server B answered {response.status_code}: {response.text[:300]}")

    async def straight(http: httpx.AsyncClient, u: int, t: int) -> None:
        response = await http.post("/v1/chat/completions", json=_direct_body(t))
        response.raise_for_status()

    direct_samples = await _users(upstream, users, turns, straight, think)
    before = cpu_ms(server_pid)
    backend_samples = await _users(api, users, turns, through_b, think)
    server_cpu = (cpu_ms(server_pid) - before) / (users * (turns + 1))
    b, d = summary_ms(backend_samples), summary_ms(direct_samples)
    return {"users": users, "turns_per_user": turns, "backend": b, "direct": d,
            "overhead_p50_ms": round(b["median_ms"] - d["median_ms"], 2),
            "overhead_p99_ms": round(b["p99_ms"] - d["p99_ms"], 2),
            "server_b_cpu_ms_per_turn": round(server_cpu, 2)}


def run() -> dict[str, Any]:
    chatting: list[dict[str, Any]] = []
    back_to_back: list[dict[str, Any]] = []
    with bench_env("overhead") as (redis_url, prefix), stub_upstream() as (upstream, _), \
            server_b_process({"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": upstream,
                      "LLM_SERVICE": "vllm", "MAX_CONCURRENT_USERS": "1000"}) as (api, pid):
        asyncio.run(_level(api, upstream, pid, 1, "warm", think=False))
        for users in LEVELS:
            for think, levels in ((True, chatting), (False, back_to_back)):
                if users == 1 and not think:
                    continue  # one user back to back is the same load as one user chatting
                levels.append(asyncio.run(_level(api, upstream, pid, users,
                                                 "chat" if think else "b2b", think)))
                print(f"  {users:>3} users {'chatting' if think else 'back to back'}: overhead p50 "
                      f"{levels[-1]['overhead_p50_ms']} ms, p99 {levels[-1]['overhead_p99_ms']} ms",
                      flush=True)
    result = {
        "setup": {"levels": list(LEVELS), "chatting_turns_per_user": CHATTING_TURNS,
                  "chatting_pause_s": list(THINK_S), "back_to_back_turns_per_level": TURNS_PER_LEVEL,
                  "upstream": "instant stub in its own process", "server_b": "1 uvicorn process",
                  "goal": "overhead <= 2 ms p50 and <= 10 ms p99 at 20 users"},
        "levels": chatting,
        "back_to_back": back_to_back,
    }
    save("overhead", result)
    return result


if __name__ == "__main__":
    run()

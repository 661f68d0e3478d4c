"""Issue 20: what the request log line and the metrics cost a chat turn, on against off.

Two Server B processes on one Redis and one instant stub upstream, identical but for
`LOG_REQUESTS` and `METRICS_ENABLED`: "on" writes its JSON line per request (to
/dev/null, as a container's stdout costs about that) and keeps Prometheus metrics;
"off" does neither. One user chats with each, in alternating blocks of turns, so this
VM's drift hits both alike; each block's CPU is read from the kernel per process.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from typing import Any

import httpx

from bench.harness import bench_env, cpu_ms, save, stub_upstream
from tests.support.server_process import ServedApp, server_b_process

BLOCKS = 8
TURNS_PER_BLOCK = 25
LINE = "오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"


def block_cpu_ms(http: httpx.Client, served: ServedApp, session: str, first_turn: int) -> float:
    """CPU per text turn of one block of turns on one server, as the kernel counts it."""
    before = cpu_ms(served.pid)
    for turn in range(first_turn, first_turn + TURNS_PER_BLOCK):
        response = http.post(f"{served.base_url}/api/chat", json={
            "session_id": session, "persona": "밝은 바리스타 민지", "max_tokens": 128,
            "tts_enabled": False, "messages": [{"role": "user", "content": f"{turn}. {LINE}"}]})
        response.raise_for_status()
    return (cpu_ms(served.pid) - before) / TURNS_PER_BLOCK


def run() -> dict[str, Any]:
    samples: dict[str, list[float]] = {"on": [], "off": []}
    with bench_env("ops") as (redis_url, prefix), stub_upstream() as (upstream, _), ExitStack() as stack:
        base = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": upstream,
                "MAX_CONCURRENT_USERS": "1000"}
        servers = {name: stack.enter_context(server_b_process(
                       {**base, "LOG_REQUESTS": flag, "METRICS_ENABLED": flag}))
                   for name, flag in (("on", "1"), ("off", "0"))}
        with httpx.Client(timeout=30) as http:
            for name, served in servers.items():
                block_cpu_ms(http, served, f"warm-{name}", 0)
            for block in range(BLOCKS):
                for name in (("on", "off") if block % 2 else ("off", "on")):
                    samples[name].append(block_cpu_ms(http, servers[name], f"s-{name}",
                                                block * TURNS_PER_BLOCK))
    on, off = statistics.median(samples["on"]), statistics.median(samples["off"])
    result = {"setup": {"blocks": BLOCKS, "turns_per_block": TURNS_PER_BLOCK,
                        "goal": "logging and metrics cost < 10% of a turn's CPU"},
              "cpu_ms_per_turn": {"on": round(on, 3), "off": round(off, 3)},
              "added_ms_per_turn": round(on - off, 3),
              "added_fraction": round((on - off) / off, 3)}
    save("ops", result)
    return result


if __name__ == "__main__":
    run()

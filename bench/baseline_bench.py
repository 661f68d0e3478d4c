"""This tree's CPU per text turn against another checkout's, in one run (`BENCH_BASELINE`).

A change that moves the hot path is judged against the code before it: set
`BENCH_BASELINE` to a checkout of that code (`git worktree add ../before <commit>`) and
run `python -m bench baseline`. Two Server B processes, one per tree, share one Redis and
one instant stub upstream, with the ops bench's settings (request log and metrics on);
one user chats with each in alternating blocks of turns, so this VM's drift hits both
alike, and each block's CPU is read from the kernel per process. Without
`BENCH_BASELINE` it says so and measures nothing.
"""

from __future__ import annotations

import os
import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.harness import bench_env, cpu_ms, save, stub_upstream
from tests.support.server_process import ROOT, ServedApp, server_b_process

BLOCKS = 12
TURNS_PER_BLOCK = 25
LINE = "오늘은 카페에서 라떼를 마시며 창밖의 비를 바라봤어. 너는 어때?"


def _block(http: httpx.Client, served: ServedApp, session: str, first_turn: int) -> float:
    before = cpu_ms(served.pid)
    for turn in range(first_turn, first_turn + TURNS_PER_BLOCK):
        response = http.post(f"{served.base_url}/api/chat", json={
            "session_id": session, "persona": "밝은 바리스타 민지", "max_tokens": 128,
            "tts_enabled": False, "messages": [{"role": "user", "content": f"{turn}. {LINE}"}]})
        response.raise_for_status()
    return (cpu_ms(served.pid) - before) / TURNS_PER_BLOCK


def run() -> dict[str, Any]:
    baseline = os.environ.get("BENCH_BASELINE")
    if not baseline:
        print("baseline: set BENCH_BASELINE to another checkout to compare with; skipped")
        return {}
    trees = {"baseline": Path(baseline).resolve(), "this": ROOT}
    samples: dict[str, list[float]] = {name: [] for name in trees}
    with bench_env("baseline") as (redis_url, prefix), stub_upstream() as (upstream, _), ExitStack() as stack:
        env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "LLM_BASE_URL": upstream,
               "MAX_CONCURRENT_USERS": "1000", "LOG_REQUESTS": "1", "METRICS_ENABLED": "1"}
        servers = {name: stack.enter_context(server_b_process(env, root=root))
                   for name, root in trees.items()}
        with httpx.Client(timeout=30) as http:
            for name, served in servers.items():
                _block(http, served, f"warm-{name}", 0)
            for block in range(BLOCKS):
                for name in (("baseline", "this") if block % 2 else ("this", "baseline")):
                    samples[name].append(_block(http, servers[name], f"s-{name}",
                                                block * TURNS_PER_BLOCK))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    result = {"setup": {"blocks": BLOCKS, "turns_per_block": TURNS_PER_BLOCK,
                        "baseline": str(trees["baseline"])},
              "cpu_ms_per_turn": {name: round(value, 3) for name, value in medians.items()},
              "blocks_ms": {name: [round(v, 3) for v in values] for name, values in samples.items()},
              "change": round(medians["this"] / medians["baseline"] - 1, 3)}
    save("baseline", result)
    print(result["cpu_ms_per_turn"], "change", result["change"])
    return result

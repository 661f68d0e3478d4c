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

from bench.harness import bench_env, save, stub_upstream
from bench.ops_bench import TURNS_PER_BLOCK, block_cpu_ms
from tests.support.server_process import ROOT, server_b_process

BLOCKS = 12


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
                block_cpu_ms(http, served, f"warm-{name}", 0)
            for block in range(BLOCKS):
                for name in (("baseline", "this") if block % 2 else ("this", "baseline")):
                    samples[name].append(block_cpu_ms(http, servers[name], f"s-{name}",
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

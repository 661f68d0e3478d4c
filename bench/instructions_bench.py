"""Instructions per text turn, counted by valgrind's callgrind: the A/B that holds on a VM
whose speed moves by half within a run and which has no hardware counters.

Each tree's turns run in a child under callgrind (`bench/turn_driver.py`), twice: with
`SHORT` and with `LONG` measured turns after the same warm-up, so their difference over
`LONG - SHORT` turns is the per-turn count, free of the start-up and warm-up. This tree
always; with `BENCH_BASELINE` (a checkout: `git worktree add ../before <commit>`) that one
too, in the same run. The upstream is the instant stub and Redis the bench's own, both
outside valgrind. Counted: Server B's work and the in-process client's, no kernel time.
Without valgrind on the PATH it says so and measures nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import bench_env, save, stub_upstream
from tests.support.server_process import ROOT

SHORT, LONG = 50, 250
DRIVER = ROOT / "bench" / "turn_driver.py"


def _collected(tree: Path, turns: int, env: dict[str, str]) -> int:
    """Instructions callgrind counted for the driver's whole run of `turns` turns."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         str(DRIVER), str(turns)],
        env={**env, "TREE": str(tree)}, cwd=tree, capture_output=True, text=True)
    found = re.findall(r"Collected : (\d+)", run.stderr)
    if run.returncode or not found:
        raise RuntimeError(f"the driver failed on {tree} ({run.returncode}): {run.stderr[-1500:]}")
    return int(found[-1])


def per_turn_millions(tree: Path, env: dict[str, str]) -> float:
    return round((_collected(tree, LONG, env) - _collected(tree, SHORT, env))
                 / (LONG - SHORT) / 1e6, 3)


def run() -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        print("instructions: needs valgrind on the PATH (Debian: apt-get install valgrind)")
        return {}
    baseline = os.environ.get("BENCH_BASELINE")
    trees = {"this": ROOT, **({"baseline": Path(baseline).resolve()} if baseline else {})}
    counts: dict[str, float] = {}
    with bench_env("instructions") as (redis_url, prefix), stub_upstream() as stub:
        for name, tree in trees.items():
            env = {key: value for key, value in os.environ.items()
                   if key not in ("JWT_SECRET", "DATA_DIR", "PYTHONPATH")}
            env |= {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"{prefix}{name[0]}:",
                    "LLM_BASE_URL": stub.base_url, "LLM_SERVICE": "vllm",
                    "DEFAULT_MODEL": "stub", "MAX_CONCURRENT_USERS": "10000",
                    "ANON_COOKIES_PER_ADDRESS": "10000",
                    "ANON_COOKIE_SECRET": secrets.token_hex(16)}
            counts[name] = per_turn_millions(tree, env)
            print(f"  {name}: {counts[name]} M instructions per text turn", flush=True)
    result: dict[str, Any] = {
        "setup": {"short_turns": SHORT, "long_turns": LONG, "users": 50,
                  "baseline": baseline, "tool": "valgrind --tool=callgrind"},
        "millions_of_instructions_per_turn": counts}
    if "baseline" in counts:
        result["change"] = round(counts["this"] / counts["baseline"] - 1, 3)
    save("instructions", result)
    return result


if __name__ == "__main__":
    run()

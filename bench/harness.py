"""What every benchmark stands on: a private real Redis, Server B and the stub upstream
under uvicorn in their own processes (so the load generator does not share their
interpreter), a CPU meter for those processes, and small statistics."""

from __future__ import annotations

import glob
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.real_redis import RedisServer
from tests.support.server_process import ServedApp, uvicorn_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@contextmanager
def private_redis() -> Iterator[str]:
    """A real Redis of the bench's own on a free TCP port: nothing else's commands land in
    its `INFO commandstats`, and nothing of the bench outlives it."""
    with tempfile.TemporaryDirectory() as folder, RedisServer(Path(folder)) as url:
        yield url


@contextmanager
def stub_upstream() -> Iterator[ServedApp]:
    """The instant OpenAI-compatible stub (bench/stub_llm.py) in its own process."""
    with uvicorn_process("bench.stub_llm:app", {}) as served:
        yield served


def cpu_ms(pid: int) -> float:
    """CPU time a process has used, all threads, in ms; nanosecond-exact from schedstat
    (the tick-based counters in /proc/<pid>/stat only move in 10 ms steps)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as stat:
                total += int(stat.read().split()[0])
        except (OSError, ValueError):
            continue
    return total / 1e6


@contextmanager
def bench_env(name: str) -> Iterator[tuple[str, str]]:
    """(redis url, key prefix) for one benchmark on the bench's own Redis."""
    with private_redis() as url:
        yield url, f"bench-{name}-{uuid.uuid4().hex[:6]}:"


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99 and mean of seconds, in milliseconds."""
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 2),
            "p90_ms": round(percentile(ordered, 90) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0],
            "kernel": os.uname().release}


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
